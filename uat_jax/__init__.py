"""uat_jax: uncertainty-promoting adversarial training in JAX/Flax (Jin et al., arXiv 2011.13538).

    import uat_jax
    clf = uat_jax.load("workdirs/at_entm")     # a checkpoint for inference: uat_jax.classifier

The library's modules, by layer (a module imports only from lower layers; pyproject.toml holds the
import-linter contract): commands (main, study, report) > evaluators, jacobian_compare > train,
classifier > config_lib > evaluate (the attack suite), jacobian > attacks > batching, files >
sharding, losses, models, data, checkpoints, cli > errors.
"""

__version__ = "0.1.0"


def __getattr__(name):
  """`uat_jax.load` and `uat_jax.Classifier`, imported on first use so that importing a light
  module (uat_jax.errors, uat_jax.cli) does not load JAX and Flax."""
  if name in ("load", "Classifier"):
    from uat_jax import classifier  # deferred: the heavy imports happen on first use only
    return getattr(classifier, name)
  raise AttributeError(f"module 'uat_jax' has no attribute {name!r}")
