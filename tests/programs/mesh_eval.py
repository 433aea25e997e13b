"""The attack suite over 1 and 8 simulated devices gives the same accuracies and compiles each
program once, however many batches and eps values it runs. Run by tests/test_evaluate.py in a
fresh interpreter.

The model computes in float64: with 32 examples on 1 device and 4 on each of 8 devices the
convolutions add their terms in other orders, which in float32 could flip the sign of a
near-zero input gradient or an argmax between two near-equal logits; in float64 that would take
two logits (or a gradient and zero) within ~1e-14 of each other, so the accuracies, counts of
correct examples, are compared exactly.
"""

import os

from tests import helpers  # imports no JAX, so the flags below still apply

os.environ["XLA_FLAGS"] = helpers.simulated_devices(8)
os.environ["JAX_ENABLE_X64"] = "1"

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from uat_jax import evaluate, models, sharding  # noqa: E402


def main():
  model = models.SmallCNN(dtype=jnp.float64)
  x = np.asarray(jax.random.uniform(jax.random.PRNGKey(0), (100, 28, 28, 1)), np.float32)
  variables = model.init(jax.random.PRNGKey(1), x[:1])
  traces = []

  def apply(variables, v):
    traces.append(v.shape)  # runs only while tracing: counts compilations
    return model.apply(variables, v)

  y = np.array(jnp.argmax(apply(variables, x), -1))
  y[::3] = (y[::3] + 1) % 10
  suite = [{"name": "FGSM", "attack": "fgsm"}, {"name": "PGD-3", "attack": "pgd", "steps": 3},
           {"name": "Square-5", "attack": "square", "queries": 5}]
  results = []
  for n_dev in (1, 8, 1):
    fn = jax.tree_util.Partial(apply, variables)  # a new Partial, as each checkpoint load makes
    traces.clear()
    r = evaluate.run_suite(fn, x, y, suite, jax.random.PRNGKey(3), eps=(0.02, 0.05, 0.1),
                           batch_size=32, mesh=sharding.make_mesh(n_dev), checks=False)
    # 4 batches (the last padded) x 3 eps per attack, yet one trace per compiled program:
    # predict, then each attack's body (its logits_fn traced a fixed number of times). The
    # jitted bodies are kept for the process (models.jit_with_model), so the second run on 1
    # device traces nothing.
    print(n_dev, "devices traces", len(traces))
    results.append(r)
  for other in results[1:]:
    for name in ("FGSM", "PGD-3", "Square-5"):
      a, b = results[0].attacks[name].robust, other.attacks[name].robust
      for eps in a:  # per example, exactly
        np.testing.assert_array_equal(a[eps], b[eps], err_msg=f"{name} eps={eps}")
    np.testing.assert_array_equal(results[0].clean, other.clean)
  print("mesh ok")


if __name__ == "__main__":
  main()
