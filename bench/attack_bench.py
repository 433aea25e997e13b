"""Evaluation throughput, measured in one run (a benchmark, never a test).

    .venv/bin/python bench/attack_bench.py --workdir=W [--num_examples=500] [--sections=...]

W is an adversarially trained workdir (without --workdir: a runlocal AT small CNN is trained
first, into /tmp). Sections (markdown tables):
  passes      each attack of the suite against its pass budget: time per attacked point over
              (its number of forward(+backward) passes) x (the measured time of one pass per
              point); 1.0 = as fast as that many plain passes (the limit an attack could reach)
  compaction  Square-N and the whole `strong` preset (only on still-robust points, as AutoAttack)
              with Square's batch compaction off (segment=0) and on (the default), same points,
              same keys: wall time and robust accuracy; for `strong`, what each attack breaks
              of what reaches it (--suites=square,strong picks them)
"""

import argparse
import os
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import uat_jax  # noqa: E402
from uat_jax import checkpoints, evaluate, losses, models  # noqa: E402


def timed(fn, *args, repeats=3):
  """Median seconds of fn(*args) after one warm-up (compile) call."""
  jax.block_until_ready(fn(*args))
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - t0)
  return float(np.median(times))


def pass_times(logits_fn, x, y):
  """Seconds per point of one forward pass and of one forward + input-gradient pass."""
  fwd = models.jit_with_model(logits_fn, lambda f, v: f(v))
  grad = models.jit_with_model(logits_fn, lambda f, v, t: jax.grad(
      lambda u: jnp.sum(losses.cross_entropy(f(u), t)))(v))
  n = len(y)
  return timed(fwd, x) / n, timed(grad, x, y) / n


# name -> (entry, forward passes, forward+backward passes) per attacked point
BUDGETS = {
    "PGD-20": ({"attack": "pgd", "steps": 20}, 1, 20),
    "APGD-CE-100": ({"attack": "apgd", "steps": 100}, 1, 101),
    "APGD-T-100x3": ({"attack": "apgd_t", "steps": 100, "num_targets": 3}, 1 + 3, 3 * 101),
    "FAB-T-100x3": ({"attack": "fab_t", "steps": 100, "num_targets": 3}, 1 + 3 * 101, 3 * 100),
    "Square-1000": ({"attack": "square", "queries": 1000, "segment": 0}, 1000, 0),
}


def section_passes(clf, x, y, eps):
  t_fwd, t_grad = pass_times(clf.logits_fn, x, y)
  print(f"\n## Attacks against their pass budget ({len(y)} points, eps {eps}; one pass per "
        f"point: forward {1e3 * t_fwd:.3f} ms, forward + input gradient {1e3 * t_grad:.3f} ms)\n")
  print("| attack | passes (fwd, fwd+bwd) | s per point | budget s per point | ratio |")
  print("|---|---|---|---|---|")
  for name, (spec, n_fwd, n_grad) in BUDGETS.items():
    fn = evaluate.make_attack(clf.logits_fn, {"name": name, **spec})
    key = jax.random.PRNGKey(0)
    seconds = timed(fn, x, y, key, jnp.float32(eps), repeats=1) / len(y)
    budget = n_fwd * t_fwd + n_grad * t_grad
    print(f"| {name} | {n_fwd}, {n_grad} | {seconds:.4f} | {budget:.4f} | {seconds / budget:.2f} |",
          flush=True)


def run_suite_timed(clf, x, y, suite, eps, only_robust):
  t0 = time.perf_counter()
  r = evaluate.run_suite(clf.logits_fn, x, y, suite, jax.random.PRNGKey(0), eps=eps,
                         checks=False, only_robust=only_robust)
  return time.perf_counter() - t0, r


def section_compaction(clf, x, y, eps_grid, queries, suites=("square", "strong")):
  print(f"\n## Square's batch compaction ({len(y)} points, eps {list(eps_grid)})\n")
  print("| suite | segment | seconds | robust accuracy per eps | speed-up |")
  print("|---|---|---|---|---|")
  chosen = {"square": (f"Square-{queries}", [{"name": "Square", "attack": "square",
                                              "queries": queries}], False),
            "strong": ("strong", evaluate.preset("strong"), True)}
  for label, suite, only_robust in (chosen[s] for s in suites):
    base = None
    for segment in (0, 100):
      entries = [dict(e, segment=segment) if e["attack"] == "square" else e for e in suite]
      seconds, r = run_suite_timed(clf, x, y, entries, eps_grid, only_robust)
      base = base or seconds
      acc = ", ".join(f"{v:.3f}" for v in r.worst_case_accuracy.values())
      print(f"| {label} | {segment} | {seconds:.1f} | {acc} | {base / seconds:.2f} |", flush=True)
      if only_robust:  # what each attack breaks of what reaches it: the most a compaction saves
        for eps in eps_grid:
          left = r.clean_accuracy
          for name, a in r.attacks.items():
            print(f"|   {name}, eps {eps} | reached by {left:.3f} | breaks "
                  f"{left - a.cumulative[eps]:.3f} | | |", flush=True)
            left = a.cumulative[eps]


def train_default(workdir):
  subprocess.run([sys.executable, "-m", "uat_jax.main",
                  "--config=fashion_mnist:at,runlocal",
                  f"--workdir={workdir}"], check=True, cwd=REPO)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--workdir", default="")
  parser.add_argument("--num_examples", type=int, default=500)
  parser.add_argument("--sections", default="passes,compaction")
  parser.add_argument("--queries", type=int, default=5000)
  parser.add_argument("--suites", default="square,strong",
                      help="compaction section: square (Square-N alone), strong (the preset)")
  args = parser.parse_args()
  workdir = args.workdir or "/tmp/uat_jax_attack_bench"
  if not args.workdir and not os.path.isdir(os.path.join(workdir, "checkpoints")):
    train_default(workdir)
  clf = uat_jax.load(workdir, "best" if os.path.isdir(checkpoints.directory(workdir, "best"))
                     else None)
  x, y = clf.test_images(args.num_examples)
  print(f"jax {jax.__version__} on {jax.default_backend()}, {os.cpu_count()} CPU threads; "
        f"{clf.config.model.name} ({clf.config.method}, step {clf.step}) from {workdir}")
  if "passes" in args.sections:
    section_passes(clf, x, y, 0.1)
  if "compaction" in args.sections:
    section_compaction(clf, x, y, (0.1, 0.2), args.queries, args.suites.split(","))


if __name__ == "__main__":
  main()
