"""Host overhead of the training loop per step (a benchmark, never a test).

    python bench/loop_bench.py [--steps=300] [--method=standard] [--model=small_cnn]

Times, in one run and interleaved, the steady state of:
  bare   the jitted train step on one device batch, stretches of --log_every steps back to back
         (the device's speed)
  loop   uat_jax's training loop (train.train_and_evaluate: batch gather from the dataset,
         placement, metrics, progress, logging; no evaluators, no checkpoint inside the run),
         its rate as its own progress lines report it between logging steps (compile excluded)
Overhead = loop - bare per step, and the loop's throughput as a share of the bare step's.
Fashion-MNIST (the offline dataset).
"""

import argparse
import logging as logging_lib
import os
import statistics
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import jax  # noqa: E402
from absl import logging  # noqa: E402

from uat_jax import benchmark, train  # noqa: E402
from uat_jax import config as config_lib  # noqa: E402


def config(args, steps):
  c = config_lib.from_file("fashion_mnist", args.method)
  with c.unlocked():
    c.model.name = args.model
    c.num_train_steps = steps
    c.checkpoint_every_steps = 10 ** 9  # only the final save
    c.log_every_steps = args.log_every
    for ev in config_lib.evaluators(c).values():
      ev.every_steps = 0  # no evaluation inside the timed stretch
  return c


def bare(args):
  step = benchmark.Step(config(args, args.steps))
  step.run(1)
  return [step.run(args.log_every) / args.log_every for _ in range(args.steps // args.log_every)]


class _Rates(logging_lib.Handler):
  def __init__(self):
    super().__init__()
    self.rates = []

  def emit(self, record):
    message = record.getMessage()
    if message.startswith("Progress: "):
      self.rates.append(float(message.split()[1]))


def loop(args):
  handler = _Rates()
  logging_lib.getLogger("absl").addHandler(handler)
  try:
    with tempfile.TemporaryDirectory() as w:
      train.train_and_evaluate(config(args, args.steps), w, evaluators=[])
  finally:
    logging_lib.getLogger("absl").removeHandler(handler)
  return [1 / r for r in handler.rates]


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--steps", type=int, default=500)
  parser.add_argument("--method", default="standard")
  parser.add_argument("--model", default="small_cnn")
  parser.add_argument("--log_every", type=int, default=100)
  parser.add_argument("--repeats", type=int, default=3)
  args = parser.parse_args()
  logging.set_verbosity(logging.INFO)
  logging_lib.getLogger("absl").setLevel(logging_lib.INFO)
  times = {"bare": [], "loop": []}
  for _ in range(args.repeats):
    for name, fn in (("bare", bare), ("loop", loop)):
      times[name] += fn(args)
  b, lp = statistics.median(times["bare"]), statistics.median(times["loop"])
  n = len(times["loop"])
  print(f"jax {jax.__version__} on {jax.default_backend()}, {os.cpu_count()} CPU threads; "
        f"{args.model} {args.method}, batch 128, {args.steps} steps per run; medians of {n} "
        f"stretches of {args.log_every} steps\n")
  print("| bare step ms | loop ms per step | overhead ms per step | loop / bare throughput |")
  print("|---|---|---|---|")
  print(f"| {1e3 * b:.2f} | {1e3 * lp:.2f} | {1e3 * (lp - b):.2f} | {b / lp:.1%} |")


if __name__ == "__main__":
  main()
