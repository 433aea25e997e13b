"""uat_jax: uncertainty-promoting adversarial training in JAX/Flax (Jin et al., arXiv 2011.13538).

    import uat_jax
    clf = uat_jax.load("workdirs/at_entm")     # a checkpoint for inference: uat_jax.classifier

The library's packages and modules, by layer (a module imports only from lower layers;
pyproject.toml holds the import-linter contract, docs/architecture.md the map): commands (main,
report, study) > evaluators, jacobian_compare, estimate > train, classifier > validation >
evaluate (the attack suite), jacobian > attacks, batching, writers > the leaves (data, models,
losses, ..., config) > files > errors.
"""

from uat_jax.version import VERSION as __version__  # noqa: E402


def __getattr__(name):
  """`uat_jax.load` and `uat_jax.Classifier`, imported on first use so that importing a light
  module (uat_jax.errors, uat_jax.cli) does not load JAX and Flax."""
  if name in ("load", "Classifier"):
    from uat_jax import classifier  # deferred: the heavy imports happen on first use only
    return getattr(classifier, name)
  raise AttributeError(f"module 'uat_jax' has no attribute {name!r}")
