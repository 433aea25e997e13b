"""Speed of the adversarial-training step, measured in one run (benchmarks, never tests).

    .venv/bin/pip install torch==2.13.0      # the reference (the `bench` extra)
    .venv/bin/python bench/at_step_bench.py [--sections torch,overhead,compile,flops,scaling]

Sections (each prints a markdown table; medians of --repeats after a compile/warm-up call):
  torch     our jitted PGD-10 AT step vs the PyTorch loop of bench/torch_reference.py (same model,
            batch, K, optimizer), interleaved; ratio torch / ours (> 1: we are faster)
  overhead  t(PGD-K AT step) / ((K + 1) t(standard step)) for K in 1, 3, 10 (the (K+1)-pass limit
            is 1.0; attack steps need no weight gradients, so below 1.0 is possible)
  compile   compile time of PGD-10 vs PGD-100 evaluation, rolled (the default) and fully unrolled
  layout    the AT step with models.conv_general_dilated vs plain lax convolutions (the XLA:CPU
            input-gradient layout fix), rolled and unrolled, K = 1 and 10
  flops     achieved GFLOP/s of the AT step (XLA cost analysis) vs a measured matmul ceiling
  scaling   AT steps/s with 1, 2, 4, 8 simulated CPU devices at the same global batch (on a CPU
            this measures sharding overhead, not speed-up)
"""

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from uat_jax import attacks, data, models, optimizers, sharding, train  # noqa: E402
from uat_jax import config as config_lib  # noqa: E402

SETUPS = {  # model -> (config file, input shape)
    "small_cnn": ("fashion_mnist", (28, 28, 1)),
    "madry_cnn": ("fashion_mnist", (28, 28, 1)),
    "preact_resnet18": ("cifar10", (32, 32, 3)),
}


def load_config(dataset, method):
  return config_lib.from_file(dataset, method)


class Ours:
  """Our jitted train step for a model, method and K on one (or more) devices."""

  def __init__(self, model_name, method="at", steps=10, batch=128, num_devices=1, unroll=1,
               plain_conv=False):
    dataset, shape = SETUPS[model_name]
    c = load_config(dataset, method)
    with c.unlocked():
      c.model.name = model_name
      c.batch_size = batch
      c.attack.steps = steps
      c.attack.unroll = unroll
      c.num_train_steps = 1000
    self.mesh = sharding.make_mesh(num_devices)
    spec = data.get_spec(c.data.name)
    model = models.create_model(c.model, spec)
    schedule = optimizers.learning_rate_schedule(c.optimizer, c.num_train_steps)
    tx = optimizers.optimizer(c.optimizer, schedule)
    self.step_fn = train.make_train_step(c, model, spec, schedule, self.mesh)
    self.state = train.create_train_state(c, model, spec, tx, self.mesh)
    rng = np.random.default_rng(0)
    self.host_batch = {"image": rng.integers(0, 256, (batch, *shape), dtype=np.uint8),
                       "label": rng.integers(0, 10, (batch,), dtype=np.int32)}
    self.batch = sharding.shard_batch(self.host_batch, self.mesh)
    self.config = c
    if plain_conv:  # trace (and compile) now with lax's convolution; later calls reuse the program
      saved, models.conv_general_dilated = models.conv_general_dilated, jax.lax.conv_general_dilated
      try:
        self()
      finally:
        models.conv_general_dilated = saved

  def __call__(self):
    self.state, metrics = self.step_fn(self.state, self.batch)
    jax.block_until_ready(metrics)

  def flops(self):
    lowered = self.step_fn.lower(self.state, self.batch)
    cost = lowered.compile().cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return float(cost.get("flops", float("nan")))


class Torch:
  def __init__(self, model_name, method="at", steps=10, batch=128, host_batch=None):
    import torch
    sys.path.insert(0, os.path.join(REPO, "bench"))
    import torch_reference as ref
    torch.manual_seed(0)
    torch.set_num_threads(os.cpu_count())
    dataset, shape = SETUPS[model_name]
    kwargs = {} if model_name == "preact_resnet18" else {"in_ch": shape[-1]}
    self.model = ref.MODELS[model_name](**kwargs)
    c = load_config(dataset, method)
    if c.optimizer.name == "sgd":
      self.opt = torch.optim.SGD(self.model.parameters(), lr=c.optimizer.learning_rate,
                                 momentum=c.optimizer.momentum,
                                 weight_decay=c.optimizer.weight_decay)
    else:
      self.opt = torch.optim.Adam(self.model.parameters(), lr=c.optimizer.learning_rate)
    self.x = torch.from_numpy(host_batch["image"].astype(np.float32) / 255).permute(0, 3, 1, 2)
    self.x = self.x.contiguous()
    self.y = torch.from_numpy(host_batch["label"].astype(np.int64))
    self.method, self.steps = method, steps
    self.eps, self.alpha = c.attack.eps, c.attack.step_size
    self.ref = ref

  def __call__(self):
    if self.method == "standard":
      self.ref.standard_step(self.model, self.opt, self.x, self.y)
    else:
      self.ref.at_step(self.model, self.opt, self.x, self.y, eps=self.eps, alpha=self.alpha,
                       steps=self.steps)


def timed(fns: dict, repeats: int) -> dict:
  """Median seconds per call, interleaved, after one warm-up (compile) call each."""
  for fn in fns.values():
    fn()
  times = {k: [] for k in fns}
  for _ in range(repeats):
    for k, fn in fns.items():
      t0 = time.perf_counter()
      fn()
      times[k].append(time.perf_counter() - t0)
  return {k: statistics.median(v) for k, v in times.items()}


def section_torch(args):
  print("\n## PGD-10 AT step, batch 128: ours vs PyTorch (torch/ours > 1: we are faster)\n")
  print("| model | ours s/step | PyTorch s/step | torch / ours |")
  print("|---|---|---|---|")
  for name in args.models:
    ours = Ours(name)
    ref = Torch(name, host_batch=ours.host_batch)
    reps = max(2, args.repeats // 3) if name == "preact_resnet18" else args.repeats
    t = timed({"ours": ours, "torch": ref}, reps)
    print(f"| {name} | {t['ours']:.3f} | {t['torch']:.3f} | {t['torch'] / t['ours']:.2f} |",
          flush=True)


def section_overhead(args):
  print("\n## AT overhead: t(PGD-K AT step) / ((K + 1) * t(standard step)), batch 128\n")
  print("| model | K | AT s/step | standard s/step | ratio |")
  print("|---|---|---|---|---|")
  for name in [m for m in args.models if m != "preact_resnet18"]:
    std = Ours(name, method="standard")
    for k in (1, 3, 10):
      at = Ours(name, steps=k)
      t = timed({"at": at, "std": std}, args.repeats)
      print(f"| {name} | {k} | {t['at']:.3f} | {t['std']:.4f} | "
            f"{t['at'] / ((k + 1) * t['std']):.2f} |", flush=True)


def section_compile(args):
  print("\n## PGD-K evaluation (Madry CNN, batch 500): compile time in K, and PGD-100 run time\n")
  print("| unroll | compile PGD-10 s | compile PGD-100 s | ratio | run PGD-100 s |")
  print("|---|---|---|---|---|")
  model = models.MadryCNN()
  x = jax.random.uniform(jax.random.PRNGKey(1), (500, 28, 28, 1))
  y = jnp.zeros((500,), jnp.int32)
  variables = model.init(jax.random.PRNGKey(0), x[:1])
  fn = models.classifier(model, variables)
  for unroll, label in ((1, "1 (default: rolled)"), (True, "True (full unroll)")):
    t, compiled = {}, {}
    for k in (10, 100):
      f = jax.jit(lambda f, v, t_, key, eps: attacks.pgd(
          f, v, t_, key=key, eps=eps, step_size=eps / 4, steps=k, unroll=unroll))
      t0 = time.perf_counter()
      compiled[k] = f.lower(fn, x, y, jax.random.PRNGKey(0), jnp.float32(0.1)).compile()
      t[k] = time.perf_counter() - t0
    run = timed({"run": lambda: jax.block_until_ready(compiled[100](
        fn, x, y, jax.random.PRNGKey(0), jnp.float32(0.1)))}, max(2, args.repeats // 3))["run"]
    print(f"| {label} | {t[10]:.2f} | {t[100]:.2f} | {t[100] / t[10]:.2f} | {run:.2f} |",
          flush=True)


def section_layout(args):
  print("\n## Convolution layout: AT step s/step with models.conv_general_dilated (ours) vs plain "
        "lax convolutions, batch 128\n")
  print("| model | K | loop | plain lax conv | ours | plain / ours |")
  print("|---|---|---|---|---|---|")
  for name in [m for m in args.models if m != "preact_resnet18"]:
    for k, unroll, loop in ((1, 1, "rolled"), (10, 1, "rolled"), (10, True, "unrolled")):
      fns = {"plain": Ours(name, steps=k, unroll=unroll, plain_conv=True),
             "ours": Ours(name, steps=k, unroll=unroll)}
      t = timed(fns, args.repeats)
      print(f"| {name} | {k} | {loop} | {t['plain']:.3f} | {t['ours']:.3f} | "
            f"{t['plain'] / t['ours']:.2f} |", flush=True)


def section_flops(args):
  n = 2048
  a = jax.random.normal(jax.random.PRNGKey(0), (n, n))
  dot = jax.jit(jnp.dot)
  t = timed({"dot": lambda: jax.block_until_ready(dot(a, a))}, args.repeats)["dot"]
  ceiling = 2 * n ** 3 / t / 1e9
  print(f"\n## Achieved GFLOP/s (XLA cost analysis) vs the matmul ceiling "
        f"({n}x{n} float32 jnp.dot: {ceiling:.1f} GFLOP/s)\n")
  print("| model | step | GFLOP / step | s / step | GFLOP/s | of ceiling |")
  print("|---|---|---|---|---|---|")
  for name in args.models:
    for method in ("standard", "at"):
      ours = Ours(name, method=method)
      # XLA's cost analysis counts a while loop's body once: count on the unrolled program
      # (same operations, same speed since the convolution-layout fix), time the default.
      flops = (Ours(name, method=method, unroll=True) if method == "at" else ours).flops() / 1e9
      reps = 2 if name == "preact_resnet18" and method == "at" else args.repeats
      s = timed({"s": ours}, reps)["s"]
      print(f"| {name} | {method}{'-10' if method == 'at' else ''} | {flops:.1f} | {s:.3f} | "
            f"{flops / s:.1f} | {flops / s / ceiling:.0%} |", flush=True)


SCALING = """
import os, sys, time, statistics
os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count={n}"
sys.path.insert(0, {bench!r})
import at_step_bench as b
ours = b.Ours("small_cnn", num_devices={n})
t = b.timed({{"s": ours}}, {repeats})["s"]
print("RESULT", 128 / t)
"""


def section_scaling(args):
  print("\n## Scaling: small CNN PGD-10 AT step, global batch 128, simulated CPU devices\n")
  print("| devices | examples/s | vs 1 device |")
  print("|---|---|---|")
  base = None
  for n in (1, 2, 4, 8):
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    out = subprocess.run([sys.executable, "-c", SCALING.format(
        n=n, bench=os.path.join(REPO, "bench"), repeats=args.repeats)], env=env,
        capture_output=True, text=True, check=True).stdout
    rate = float(out.split("RESULT")[1])
    base = base or rate
    print(f"| {n} | {rate:.0f} | {rate / base:.2f} |", flush=True)


SECTIONS = {"torch": section_torch, "overhead": section_overhead, "compile": section_compile,
            "layout": section_layout, "flops": section_flops, "scaling": section_scaling}


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--sections", default=",".join(SECTIONS))
  parser.add_argument("--models", default="small_cnn,madry_cnn,preact_resnet18")
  parser.add_argument("--repeats", type=int, default=7)
  args = parser.parse_args()
  args.models = args.models.split(",")
  print(f"jax {jax.__version__} on {jax.default_backend()}, {os.cpu_count()} CPU threads, "
        f"{platform.machine()}, Python {platform.python_version()}")
  for name in args.sections.split(","):
    SECTIONS[name](args)


if __name__ == "__main__":
  main()
