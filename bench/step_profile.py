"""Where the time of an AT step goes, by differences (a benchmark, never a test).

    python bench/step_profile.py [--case=preact_resnet18:bfloat16:512] [--xla_variants]

Times variants of one train step (uat_jax.benchmark's synthetic batches, steps back to back) and
prints images/s, achieved TFLOP/s and each variant against the baseline:
  baseline        the recipe's PGD-10 AT step
  pgd-1           one attack step: t(PGD-10) - t(PGD-1) over 9 is the cost of an attack step
  standard        no attack: the weight-update part
  attack bn eval  the attack with running batch-norm statistics instead of batch statistics
                  (changes the method; shows what computing statistics inside the attack costs)
  batch x2        twice the batch: how far from saturation the device is
With --xla_variants, the baseline again in fresh processes under XLA flags (latency-hiding
scheduler on; CUDA graphs off), since XLA reads its flags once per process.
"""

import argparse
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from uat_jax import benchmark  # noqa: E402

XLA_VARIANTS = {"latency-hiding scheduler": "--xla_gpu_enable_latency_hiding_scheduler=true",
                "CUDA graphs off": "--xla_gpu_enable_command_buffer="}


def rate(case, seconds, **overrides):
  """(images/s, FLOPs per image) of `case` with config `overrides` ("attack.steps": 1, ...)."""
  c = benchmark.case_config(case)
  with c.unlocked():
    for k, v in overrides.items():
      node = c
      *path, leaf = k.split(".")
      for p in path:
        node = node[p]
      node[leaf] = v
  step = benchmark.Step(c)
  step.run(1)  # compile
  return c.batch_size / step.seconds_per_step(seconds), benchmark.flops_per_image(c)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--case", default="preact_resnet18:bfloat16:512")
  parser.add_argument("--seconds", type=float, default=4.0)
  parser.add_argument("--xla_variants", action="store_true")
  parser.add_argument("--only", default=None, help=argparse.SUPPRESS)  # one variant, printed raw
  args = parser.parse_args()
  case = benchmark.parse_case(args.case)
  if args.only == "baseline":
    print("RESULT", rate(case, args.seconds)[0])
    return
  import jax
  print(f"{args.case} on {jax.devices()[0].device_kind}, jax {jax.__version__}\n")
  print("| variant | images/s | TFLOP/s | vs baseline |")
  print("|---|---|---|---|")
  base = None
  double = dict(case, batch=2 * case["batch"])
  variants = [("baseline", case, {}), ("pgd-1", case, {"attack.steps": 1}),
              ("standard", dict(case, method="standard"), {}),
              ("attack bn eval", case, {"attack.bn_mode": "eval"}), ("batch x2", double, {})]
  for name, c, overrides in variants:
    r, flops = rate(c, args.seconds, **overrides)
    base = base or r
    print(f"| {name} | {r:,.0f} | {r * flops / 1e12:.1f} | {r / base:.2f} |", flush=True)
  if args.xla_variants:
    for name, flag in XLA_VARIANTS.items():
      env = dict(os.environ, XLA_FLAGS=(os.environ.get("XLA_FLAGS", "") + " " + flag).strip())
      out = subprocess.run([sys.executable, __file__, "--case", args.case, "--seconds",
                            str(args.seconds), "--only", "baseline"], env=env,
                           capture_output=True, text=True)
      if out.returncode:
        print(f"| {name} | failed: {out.stderr.strip().splitlines()[-1][:80]} | | |")
        continue
      r = float(out.stdout.split("RESULT")[1])
      print(f"| baseline, {name} | {r:,.0f} | | {r / base:.2f} |", flush=True)


if __name__ == "__main__":
  main()
