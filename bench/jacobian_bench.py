"""Per-example input Jacobians: batched vmap(jacrev) vs a Python loop of per-example jacrev calls
vs K separate batched VJPs (one per output class), for the small CNN and PreAct ResNet-18.

    .venv/bin/python bench/jacobian_bench.py [--repeats 5]

The not-jitted loop is what `[jax.jacrev(f)(x[i]) for i in ...]` costs when written without
jax.jit (op-by-op dispatch). Prints the median time per example of each method (interleaved repeats after a compile/warm-up
call), the ratios to the batched method, and checks that all three give the same Jacobian.
"""

import argparse
import os
import platform
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from uat_jax import data, jacobian, models  # noqa: E402


def methods(logits_fn, x):
  shape = x.shape[1:]
  b = x.shape[0]
  flat = x.reshape(b, -1)
  g = lambda f: logits_fn(f.reshape((1,) + shape))[0]
  batched = jax.jit(lambda f: jax.vmap(jax.jacrev(g))(f))
  single = jax.jit(jax.jacrev(g))
  num_classes = logits_fn(x[:1]).shape[-1]

  def batch_fn(f):
    return logits_fn(f.reshape((-1,) + shape))

  @jax.jit
  def one_vjp(f, k):
    _, vjp = jax.vjp(batch_fn, f)
    return vjp(jax.nn.one_hot(jnp.full((f.shape[0],), k), num_classes))[0]

  eager = jax.jacrev(g)
  return {
      "vmap(jacrev), batched": lambda: batched(flat),
      "loop of per-example jacrev, jitted": lambda: jnp.stack([single(flat[i]) for i in range(b)]),
      "loop of per-example jacrev, not jitted": lambda: jnp.stack(
          [eager(flat[i]) for i in range(b)]),
      "K batched VJPs (one per class)": lambda: jnp.stack(
          [one_vjp(flat, k) for k in range(num_classes)], 1),
  }


def bench(name, model, shape, batch, repeats):
  x = jax.random.uniform(jax.random.PRNGKey(0), (batch, *shape))
  variables = model.init(jax.random.PRNGKey(1), x[:1], train=False)
  logits_fn = models.classifier(model, variables)
  fns = methods(logits_fn, x)
  ref = np.asarray(jacobian.input_jacobian(logits_fn, x)).reshape(batch, 10, -1)
  deviation = {}
  for label, fn in fns.items():  # compile, warm up and check
    out = np.asarray(jax.block_until_ready(fn()))
    # float32 on XLA:CPU: deep nets differ by ~1e-3 (relative Frobenius) between programs
    deviation[label] = np.linalg.norm(out - ref) / np.linalg.norm(ref)
    assert deviation[label] < 1e-2, (label, deviation[label])
  times = {label: [] for label in fns}
  for _ in range(repeats):  # interleaved
    for label, fn in fns.items():
      t0 = time.perf_counter()
      jax.block_until_ready(fn())
      times[label].append((time.perf_counter() - t0) / batch)
  base = statistics.median(times["vmap(jacrev), batched"])
  print(f"\n{name}: batch {batch}, input {shape}, 10 classes; median of {repeats}")
  print("| method | ms / example | x slower than batched | relative difference to "
        "jacobian.input_jacobian |")
  print("|---|---|---|---|")
  for label, t in times.items():
    m = statistics.median(t)
    print(f"| {label} | {1e3 * m:.2f} | {m / base:.2f} | {deviation[label]:.1e} |")


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--small-batch", type=int, default=64)
  parser.add_argument("--resnet-batch", type=int, default=16)
  args = parser.parse_args()
  print(f"jax {jax.__version__} on {jax.default_backend()} ({jax.devices()[0].device_kind}), "
        f"{os.cpu_count()} CPU threads, {platform.processor() or platform.machine()}")
  bench("small CNN", models.SmallCNN(), (28, 28, 1), args.small_batch, args.repeats)
  spec = data.get_spec("cifar10")
  bench("PreAct ResNet-18", models.PreActResNet18(num_classes=10, mean=tuple(spec.mean), std=tuple(spec.std)),
        (32, 32, 3), args.resnet_batch, args.repeats)


if __name__ == "__main__":
  main()
