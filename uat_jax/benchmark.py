"""`uat-jax bench`: measure the train step on the local device and write throughput rows
(uat_jax.throughput) that `--dry_run` estimates then prefer.

    uat-jax bench                          # the default cases of this backend (under 5 minutes)
    uat-jax bench --cases=preact_resnet18:bfloat16:512,wide_resnet:bfloat16:128
    uat-jax bench --cases=smoke --out=/tmp/t.json   # tiny shapes: checks the code path

A case is MODEL:DTYPE:BATCH[:METHOD] with METHOD `at` (the recipe's PGD attack, the default) or
`standard`; CIFAR-10's recipe for the ResNets, Fashion-MNIST's for the small and Madry CNNs.
Each case is compiled (compile time recorded), its FLOPs per image counted by XLA's cost analysis
(attack loop unrolled: a rolled loop's body is counted once), then timed: steps run back to
back as in training, the median of three timed stretches. Synthetic uint8 batches: no dataset
needed.
"""

from __future__ import annotations

import argparse
import datetime
import statistics
import sys
import time
from typing import Any, Optional

import numpy as np

from uat_jax import config as config_lib
from uat_jax import data, estimate, optimizers, provenance, sharding, tables, throughput, train
from uat_jax.errors import UatError

RECIPES = {"small_cnn": "fashion_mnist", "madry_cnn": "fashion_mnist",
           "preact_resnet18": "cifar10", "wide_resnet": "cifar10"}
# Per backend, under 5 minutes on its device (compiles included): the recipes' shapes.
DEFAULT_CASES = {
    "gpu": ["preact_resnet18:float32:128", "preact_resnet18:bfloat16:128",
            "preact_resnet18:float32:512", "preact_resnet18:bfloat16:512",
            "preact_resnet18:float32:128:standard", "wide_resnet:bfloat16:128",
            "madry_cnn:float32:128", "small_cnn:float32:128"],
    "cpu": ["small_cnn:float32:128", "madry_cnn:float32:128"],
    "smoke": ["small_cnn:float32:8", "small_cnn:float32:8:standard"],
}
DEFAULT_CASES["tpu"] = DEFAULT_CASES["gpu"]


def parse_case(case: str) -> dict[str, Any]:
  parts = case.split(":")
  if len(parts) not in (3, 4) or parts[0] not in RECIPES or not parts[2].isdigit():
    raise UatError(f"bench case {case!r}: write MODEL:DTYPE:BATCH[:METHOD] with MODEL one of "
                   f"{', '.join(RECIPES)} (e.g. preact_resnet18:bfloat16:512)")
  method = parts[3] if len(parts) == 4 else "at"
  if method not in ("at", "standard") or parts[1] not in ("float32", "bfloat16"):
    raise UatError(f"bench case {case!r}: DTYPE is float32 or bfloat16, METHOD at or standard")
  return {"model": parts[0], "dtype": parts[1], "batch": int(parts[2]), "method": method}


def case_config(case: dict[str, Any], attack_steps: Optional[int] = None):
  """The recipe's config with the case's model, dtype, batch and method."""
  c = config_lib.from_file(RECIPES[case["model"]], case["method"])
  with c.unlocked():
    c.model.name = case["model"]
    c.dtype = case["dtype"]
    c.batch_size = case["batch"]
    if attack_steps is not None:
      c.attack.steps = attack_steps
  return c


class Step:
  """The jitted train step of a config on one device, fed one synthetic batch."""

  def __init__(self, config):
    self.config = config
    self.mesh = sharding.make_mesh(1)
    spec = data.get_spec(config.data.name)
    model = train.build_model(config, spec)
    schedule = optimizers.learning_rate_schedule(config.optimizer, 1000)
    tx = optimizers.optimizer(config.optimizer, schedule)
    self.state = train.create_train_state(config, model, spec, tx, self.mesh)
    self.fn = train.make_train_step(config, model, spec, schedule, self.mesh)
    rng = np.random.default_rng(0)
    host = {"image": rng.integers(0, 256, (config.batch_size, *spec.shape), dtype=np.uint8),
            "label": rng.integers(0, spec.num_classes, (config.batch_size,), dtype=np.int32)}
    self.batch = sharding.shard_batch(host, self.mesh)
    self.image = list(spec.shape)

  def run(self, n: int) -> float:
    """Seconds for `n` steps back to back (blocking once, at the end, as training does)."""
    import jax
    t0 = time.perf_counter()
    metrics = None
    for _ in range(n):
      self.state, metrics = self.fn(self.state, self.batch)
    jax.block_until_ready((self.state, metrics))
    return time.perf_counter() - t0


  def seconds_per_step(self, seconds: float) -> float:
    """Median seconds per step of three stretches of steps run back to back, about `seconds`
    in all (after compiling: call run(1) first)."""
    per_step = max(self.run(1), 1e-6)
    n = max(2, int(seconds / 3 / per_step))
    return statistics.median(self.run(n) / n for _ in range(3))


_FLOPS_PER_IMAGE: dict[tuple, float] = {}


def flops_per_image(config) -> float:
  """FLOPs per image of `config`'s train step (estimate.step_flops), counted once per model,
  method and attack length: they do not depend on dtype or batch."""
  key = (config.model.name, config.method, int(config.attack.steps))
  if key not in _FLOPS_PER_IMAGE:
    _FLOPS_PER_IMAGE[key] = estimate.step_flops(config) / config.batch_size
  return _FLOPS_PER_IMAGE[key]


def measure(case: dict[str, Any], seconds: float = 6.0) -> dict[str, Any]:
  """One throughput row for `case` on the default device."""
  import jax
  config = case_config(case)
  step = Step(config)
  t0 = time.perf_counter()
  step.run(1)  # compile + one step
  compile_s = time.perf_counter() - t0
  s = step.seconds_per_step(seconds)
  flops = flops_per_image(config) * case["batch"]
  return {
      "device": jax.devices()[0].device_kind, "backend": jax.default_backend(),
      "step": "at" if case["method"] != "standard" else "standard", "model": case["model"],
      "image": step.image, "dtype": case["dtype"], "batch": case["batch"],
      "attack_steps": int(config.attack.steps) if case["method"] != "standard" else 0,
      "images_per_s": round(case["batch"] / s, 1),
      "gflop_per_image": round(flops / case["batch"] / 1e9, 3),
      "compile_s": round(compile_s, 1),
      "versions": {k: v for k, v in provenance.record().items()
                   if k in ("uat_jax", "jax", "jaxlib", "flax")},
      "date": datetime.date.today().isoformat(), "source": "uat-jax bench"}


def format_rows(rows: list[dict[str, Any]]) -> str:
  return tables.markdown_table(
      ["device", "case", "images/s", "GFLOP/image", "TFLOP/s", "compile s"],
      [[r["device"], throughput.describe(r), f"{r['images_per_s']:,.0f}",
        f"{r['gflop_per_image']:.2f}", f"{r['images_per_s'] * r['gflop_per_image'] / 1e3:.1f}",
        f"{r['compile_s']:.0f}"] for r in rows])


def main(argv: Optional[list[str]] = None) -> int:
  parser = argparse.ArgumentParser(prog="uat-jax bench", description=__doc__.splitlines()[0])
  parser.add_argument("--cases", default=None, help="comma-separated MODEL:DTYPE:BATCH[:METHOD],"
                      " or one of " + ", ".join(DEFAULT_CASES) + " (default: this backend's)")
  parser.add_argument("--out", default=None, help="table to write (default: the user's table, "
                      "which --dry_run prefers)")
  parser.add_argument("--seconds", type=float, default=6.0, help="timed seconds per case")
  args = parser.parse_args(sys.argv[1:] if argv is None else argv)
  try:
    import jax
    names = args.cases or jax.default_backend()
    cases = [parse_case(c) for c in DEFAULT_CASES.get(names, names.split(","))]
    out = args.out or throughput.user_table()
    rows = []
    for i, case in enumerate(cases):
      print(f"[{i + 1}/{len(cases)}] {case['model']} {case['dtype']} batch {case['batch']} "
            f"{case['method']} ...", flush=True)
      rows.append(measure(case, args.seconds))
      print(format_rows(rows[-1:]).splitlines()[-1], flush=True)
      throughput.add(out, rows[-1:])  # each row as it lands: an interrupted run keeps them
  except UatError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  print("\n" + format_rows(rows) + f"\n\nwrote {len(rows)} rows to {out}")
  return 0

