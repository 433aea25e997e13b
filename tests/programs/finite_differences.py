"""Input Jacobians of a float64 small CNN against central finite differences. Run by
tests/test_jacobian.py in a fresh interpreter (64-bit JAX must be on before jax loads)."""

import os

os.environ["JAX_ENABLE_X64"] = "1"

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from uat_jax import jacobian, models  # noqa: E402


def main():
  model = models.SmallCNN(dtype=jnp.float64)  # computation dtype
  x = jax.random.uniform(jax.random.PRNGKey(0), (3, 28, 28, 1), jnp.float64)
  variables = model.init(jax.random.PRNGKey(1), x[:1].astype(jnp.float32))
  logits_fn = lambda v: model.apply(variables, v)
  worst = 0.0
  for output in ("logits", "probs", "log_probs"):
    J = np.asarray(jacobian.input_jacobian(logits_fn, x, output))
    assert J.dtype == np.float64, J.dtype
    f = jax.jit(jacobian.output_fn(logits_fn, output))
    for i in range(3):
      for d in range(4):
        v = np.array(jax.random.normal(jax.random.PRNGKey(10 * i + d), (784,), jnp.float64))
        v /= np.linalg.norm(v)
        h = 1e-7  # small enough not to cross a ReLU or max-pool kink
        xp = x[i:i + 1] + h * v.reshape(1, 28, 28, 1)
        xm = x[i:i + 1] - h * v.reshape(1, 28, 28, 1)
        fd = (np.asarray(f(xp))[0] - np.asarray(f(xm))[0]) / (2 * h)
        exact = J[i] @ v
        worst = max(worst, np.linalg.norm(fd - exact) / np.linalg.norm(exact))
  print("worst relative error", worst)
  # Central differences: truncation O(h^2) plus cancellation ~u64 |f| / h = 1e-16 / 1e-7.
  assert worst < 1e-6, worst


if __name__ == "__main__":
  main()
