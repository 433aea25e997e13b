"""uat_jax: uncertainty-promoting adversarial training in JAX/Flax (Jin et al., arXiv 2011.13538)."""

__version__ = "0.1.0"
