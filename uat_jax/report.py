r"""The study's report: REPORT.md, its figures and the small JSON results it is built from.

  python -m uat_jax.report --study=configs/fashion_mnist_study.py --root=workdirs/study \
      --out=results/fashion_mnist

`collect` copies from the study's workdirs into OUT/data/ only what the report needs (the sweep,
per run the training result, both evaluations' results.json and the training curves; per method
the Jacobian summary); `build` writes OUT/REPORT.md and OUT/figures/*.png from OUT/data alone, so
the committed JSON reproduces the committed report (`--from_data` rebuilds without workdirs).
The verdict on each of the paper's claims is computed from the numbers with the thresholds
stated next to it.
"""

from __future__ import annotations

import glob
import os
from typing import Any, Optional

import numpy as np
from absl import flags
from ml_collections import config_flags

from uat_jax import cli, files
from uat_jax.errors import UatError

NAMES = {"standard": "Standard", "entm": "EntM", "ls": "LS", "at": "AT", "at_entm": "AT+EntM",
         "at_ls": "AT+LS"}
JACOBIAN_COLUMNS = ("logits/fro", "logits/spectral", "probs/fro", "probs/spectral")


# --------------------------------------------------------------------------------------------
# Collecting the small results from the workdirs.
# --------------------------------------------------------------------------------------------

def collect(study, root: str, data_dir: str) -> None:
  """Copies what the report needs from ROOT into DATA_DIR (small JSON files); writes nothing
  unless every result is there."""
  from uat_jax import study as study_lib
  missing: list[str] = []

  def read(path: str) -> Optional[dict[str, Any]]:  # without the machine-specific workdir
    if not os.path.exists(path):
      missing.append(path)
      return None
    result = files.read_json(path)
    result.pop("workdir", None)
    return result

  runs, jacobians = [], {}
  for method in study.methods:
    for seed in study.seeds:
      w = study_lib.run_dir(root, method, seed)
      run = {"method": method, "seed": seed, "train": read(os.path.join(w, "train_result.json")),
             "eval": {o: read(os.path.join(w, "eval", o, "results.json")) for o in study.evals}}
      if os.path.exists(os.path.join(w, "config.json")):
        run["train_eps"] = files.read_json(os.path.join(w, "config.json"))["attack"]["eps"]
      metrics = os.path.join(w, "metrics.jsonl")
      run["curves"] = (files.read_curves(metrics, ("eval/", "jacobian/"))
                       if os.path.exists(metrics) else {})
      runs.append(run)
      if seed == study.seeds[0]:
        jacobians[method] = read(os.path.join(w, "jacobian", "summary.json"))
  sweep = read(os.path.join(root, "sweep.json"))
  if missing:
    raise UatError(f"the study in {root} is not finished ({len(missing)} results missing, e.g. "
                   f"{missing[0]}): run `python -m uat_jax.study` (or launch/reproduce.sh) first")
  for run in runs:
    files.write_json(os.path.join(data_dir, "runs", f"{run['method']}_s{run['seed']}.json"), run,
                     indent=1)
  for method, summary in jacobians.items():
    files.write_json(os.path.join(data_dir, "jacobian", f"{method}.json"), summary, indent=1)
  files.write_json(os.path.join(data_dir, "sweep.json"), sweep, indent=1)
  files.write_json(os.path.join(data_dir, "study.json"), study.to_dict(), indent=1)


# --------------------------------------------------------------------------------------------
# Reading numbers.
# --------------------------------------------------------------------------------------------

def _pgd_accuracy(train_result: dict[str, Any]) -> float:
  """A training result's PGD accuracy at the training eps ("pgd_accuracy" in results written
  before the evaluators logged it as "eval/pgd_accuracy")."""
  return train_result.get("eval/pgd_accuracy", train_result.get("pgd_accuracy"))


def _at_eps(table: dict[str, float], eps: float) -> Optional[float]:
  for k, v in table.items():
    if abs(float(k) - eps) < 1e-9:
      return v
  return None


class Results:
  """The collected data: runs by method, Jacobian summaries, sweep, study settings."""

  def __init__(self, data_dir: str):
    self.study = files.read_json(os.path.join(data_dir, "study.json"))
    self.sweep = files.read_json(os.path.join(data_dir, "sweep.json"))
    self.runs: dict[str, list[dict]] = {}
    for path in sorted(glob.glob(os.path.join(data_dir, "runs", "*.json"))):
      run = files.read_json(path)
      self.runs.setdefault(run["method"], []).append(run)
    self.jacobian = {m: files.read_json(p) for m, p in (
        (os.path.basename(p)[:-5], p) for p in glob.glob(os.path.join(data_dir, "jacobian", "*.json")))}
    self.methods = [m for m in self.study["methods"] if m in self.runs]
    any_run = self.runs[self.methods[0]][0]
    self.eps = sorted({float(e) for ev in any_run["eval"].values() for e in ev["eps"]})
    self.train_eps = any_run["train_eps"]
    self.attacks = [(o, a) for o, ev in any_run["eval"].items() for a in ev["attacks"]]

  def values(self, method: str, fn) -> list[float]:
    out = [fn(run) for run in self.runs[method]]
    return [v for v in out if v is not None]

  def clean(self, method: str) -> list[float]:
    return self.values(method, lambda r: r["eval"]["paper"]["clean_accuracy"])

  def attack(self, method: str, output: str, name: str, eps: float) -> list[float]:
    """Accuracy under one attack; for attacks run only on the points earlier ones missed
    (only_robust, AutoAttack order) the cumulative accuracy after it."""
    def one(run):
      entry = run["eval"][output]["attacks"].get(name)
      if entry is None:
        return None
      return _at_eps(entry.get("accuracy", entry["cumulative"]), eps)
    return self.values(method, one)

  def is_cumulative(self, output: str, name: str) -> bool:
    entry = self.runs[self.methods[0]][0]["eval"][output]["attacks"][name]
    return "accuracy" not in entry

  def worst(self, method: str, eps: float) -> list[float]:
    """Worst case over every attack of every evaluation: the lowest per-evaluation worst case
    (each is per example over its attacks; across evaluations only the minimum is known)."""
    def one(run):
      found = [_at_eps(ev["worst_case"]["accuracy"], eps) for ev in run["eval"].values()]
      found = [v for v in found if v is not None]
      return min(found) if found else None
    return self.values(method, one)

  def jac(self, method: str, quantity: str, points: str = "clean") -> Optional[float]:
    s = self.jacobian.get(method, {}).get("summary", {}).get(points, {}).get(quantity)
    return None if s is None else s["mean"]


def mean_std(values: list[float]) -> tuple[float, float]:
  if not values:
    return float("nan"), float("nan")
  return float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def fmt(values: list[float]) -> str:
  if not values:
    return "-"
  m, s = mean_std(values)
  return f"{100 * m:.1f} ± {100 * s:.1f}" if len(values) > 1 else f"{100 * m:.1f}"


# --------------------------------------------------------------------------------------------
# Figures.
# --------------------------------------------------------------------------------------------

def plot_accuracy_vs_eps(r: Results, path: str) -> None:
  plt = files.pyplot()
  fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), dpi=120, sharey=True)
  for ax, (title, fn) in zip(axes, (("PGD-20 (a weak attack)",
                                     lambda m, e: r.attack(m, "paper", "PGD-20", e)),
                                    ("worst case over all attacks", r.worst))):
    for m in r.methods:
      xs = [0.0] + r.eps
      ms = [mean_std(r.clean(m))[0]] + [mean_std(fn(m, e))[0] for e in r.eps]
      ax.plot(xs, ms, marker="o", label=NAMES.get(m, m),
              linestyle="-" if m.startswith("at") else "--")
    ax.axvline(r.train_eps, color="grey", lw=0.8, ls=":")
    ax.set_title(title)
    ax.set_xlabel("L-inf eps")
    ax.grid(alpha=0.3)
  axes[0].set_ylabel("accuracy (mean over seeds)")
  axes[1].legend(fontsize=8)
  files.save_figure(fig, path)


def plot_jacobian_histograms(r: Results, path: str) -> None:
  plt = files.pyplot()
  quantities = ("logits/fro", "probs/fro")
  fig, axes = plt.subplots(1, len(quantities), figsize=(10, 3.6), dpi=120)
  for ax, q in zip(axes, quantities):
    for m in r.methods:
      s = r.jacobian.get(m, {}).get("summary", {}).get("clean", {}).get(q)
      if s is None or "histogram" not in s:
        continue
      edges, counts = np.asarray(s["histogram"]["edges"]), np.asarray(s["histogram"]["counts"])
      centers = np.sqrt(edges[:-1] * edges[1:]) if np.all(edges > 0) else 0.5 * (
          edges[:-1] + edges[1:])
      ax.plot(centers, counts / max(counts.sum(), 1), label=NAMES.get(m, m))
    ax.set_xscale("log")
    ax.set_title(f"|J| {q} on clean test points")
    ax.set_xlabel("norm (log scale)")
    ax.grid(alpha=0.3)
  axes[0].set_ylabel("fraction of examples")
  axes[-1].legend(fontsize=8)
  files.save_figure(fig, path)


def plot_training_curves(r: Results, path: str) -> None:
  plt = files.pyplot()
  fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), dpi=120)
  for ax, key, label in ((axes[0], "eval/pgd_accuracy", "PGD accuracy at the training eps"),
                         (axes[1], "jacobian/logits/fro", "mean |J| logits/fro")):
    for m in r.methods:
      curve = r.runs[m][0]["curves"].get(key)
      if curve:
        steps, values = zip(*curve)
        ax.plot(steps, values, marker=".", label=NAMES.get(m, m))
    ax.set_title(f"{label} (seed {r.runs[r.methods[0]][0]['seed']})")
    ax.set_xlabel("training step")
    ax.grid(alpha=0.3)
  axes[1].set_yscale("log")
  axes[0].legend(fontsize=8)
  files.save_figure(fig, path)


# --------------------------------------------------------------------------------------------
# The claims.
# --------------------------------------------------------------------------------------------

def _gain(r: Results, method: str, other: str, fn) -> tuple[float, float]:
  """(mean difference, its standard error from the seeds' spread; 0 with one seed)."""
  a, b = fn(method), fn(other)
  if not a or not b:
    return float("nan"), float("nan")
  se = np.sqrt((np.var(a, ddof=1) / len(a) if len(a) > 1 else 0.0)
               + (np.var(b, ddof=1) / len(b) if len(b) > 1 else 0.0))
  return float(np.mean(a) - np.mean(b)), float(se)


def _pts(x: float) -> str:
  return f"{100 * x:+.1f} points"


def claims(r: Results) -> list[tuple[str, str, str]]:
  """(claim, verdict, paragraph) for each of the paper's five claims."""
  large, small = 2 * r.train_eps, min(r.eps)
  base = r.study.get("baseline", "at")
  out = []
  seeds = len(r.study["seeds"])
  noise = "" if seeds > 1 else " (one seed: no error bars)"

  # 1. AT+EntM / AT+LS beat AT at twice the training eps.
  parts, gains = [], []
  for m in ("at_entm", "at_ls"):
    if m in r.runs and base in r.runs:
      g, se = _gain(r, m, base, lambda x: r.worst(x, large))
      weak, _ = _gain(r, m, base, lambda x: r.attack(x, "paper", "PGD-20", large))
      gains.append((g, se))
      parts.append(f"{NAMES[m]} vs AT at eps {large:g}, worst case: {_pts(g)} (± {100 * se:.1f}; "
                   f"PGD-20 alone: {_pts(weak)})")
  clear = [g for g, se in gains if g > max(2 * se, 0.01)]
  verdict = ("reproduced" if clear and max(clear) >= 0.05 else
             "partly" if clear else "not reproduced")
  out.append(("1. Uncertainty promotion + AT beats AT at twice the training eps (paper: ~9 points)",
              verdict, "; ".join(parts) + f"{noise}. Judged on the worst case over every attack. "
              "Reproduced: a gain above 2 standard errors and at least 5 points; partly: above 2 "
              "standard errors and 1 point; else not."))

  # 2. Clean accuracy at least AT's.
  parts, ok = [], []
  for m in ("at_entm", "at_ls"):
    if m in r.runs and base in r.runs:
      g, se = _gain(r, m, base, r.clean)
      ok.append(g >= -max(2 * se, 0.01))
      parts.append(f"{NAMES[m]} clean accuracy vs AT: {_pts(g)}")
  verdict = "reproduced" if ok and all(ok) else "partly" if any(ok) else "not reproduced"
  out.append(("2. Clean accuracy at least as high as AT's", verdict,
              "; ".join(parts) + f"{noise}. Reproduced: no drop larger than 1 point (or 2 "
              "standard errors) for both."))

  # 3. EntM shrinks the input-Jacobian norm ~10x relative to AT.
  ratios = {}
  for q in JACOBIAN_COLUMNS:
    a, e = r.jac(base, q), r.jac("at_entm", q)
    if a and e:
      ratios[q] = a / e
  if ratios:
    best = max(ratios.values())
    verdict = "reproduced" if best >= 5 else "partly" if best >= 1.5 else "not reproduced"
    text = ", ".join(f"{q} {v:.2f}x" for q, v in ratios.items())
    out.append(("3. EntM shrinks the input-Jacobian norm ~10x relative to AT", verdict,
                f"Ratio of mean norms AT / AT+EntM on clean test points: {text}. Reproduced: a "
                "ratio of 5x or more (the paper's order of magnitude); partly: 1.5-5x; else not."))

  # 4 and 5. EntM / LS alone: gains under weak attacks at small eps that strong attacks remove.
  parts4, parts5, v4, v5 = [], [], [], []
  for m in ("entm", "ls"):
    if m not in r.runs or "standard" not in r.runs:
      continue
    weak_small, _ = _gain(r, m, "standard", lambda x: r.attack(x, "paper", "PGD-20", small))
    strong_small, _ = _gain(r, m, "standard", lambda x: r.worst(x, small))
    strong_large = mean_std(r.worst(m, large))[0]
    parts4.append(f"{NAMES[m]} vs standard at eps {small:g}: PGD-20 {_pts(weak_small)}, worst "
                  f"case {_pts(strong_small)}; worst-case accuracy at eps {large:g}: "
                  f"{100 * strong_large:.1f}%")
    v4.append((weak_small > 0.02, strong_large <= 0.10 or strong_small <= 0.02))
    weak_train, _ = _gain(r, m, "standard", lambda x: r.attack(x, "paper", "PGD-20", r.train_eps))
    strong_train, _ = _gain(r, m, "standard", lambda x: r.worst(x, r.train_eps))
    parts5.append(f"{NAMES[m]} at eps {r.train_eps:g}: gain over standard {_pts(weak_train)} "
                  f"under PGD-20, {_pts(strong_train)} in the worst case")
    v5.append(weak_train > 0.02 and strong_train < weak_train / 2)
  if v4:
    both = [a and b for a, b in v4]
    verdict = ("reproduced" if all(both) else
               "partly" if any(a or b for a, b in v4) else "not reproduced")
    out.append(("4. EntM / LS alone are robust only at small eps and fall under strong "
                "attacks", verdict, "; ".join(parts4) + f"{noise}. Reproduced, for both: a "
                "gain above 2 points over standard under PGD-20 at the small eps, and under the "
                "worst case either at most 10% accuracy at the large eps or no gain (2 points) "
                "at the small eps; partly: one of the two."))
  if v5:
    verdict = "reproduced" if all(v5) else "partly" if any(v5) else "not reproduced"
    out.append(("5. Gains seen under weak attacks vanish under strong ones", verdict,
                "; ".join(parts5) + f"{noise}. Reproduced: a gain above 2 points under PGD-20 "
                "that shrinks to less than half under the worst case."))
  return out


# --------------------------------------------------------------------------------------------
# REPORT.md
# --------------------------------------------------------------------------------------------

def _table(header: list[str], rows: list[list[str]]) -> str:
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def markdown(r: Results) -> str:
  s = r.study
  seeds = s["seeds"]
  large = 2 * r.train_eps
  lines = [f"# Reproducing \"Rethinking Uncertainty in Deep Learning\" on {r.runs[r.methods[0]][0]['eval']['paper']['dataset']}",
           "",
           f"Built by `uat_jax/report.py` from the JSON in `data/`. Training config "
           f"`{s['config']}` with the study's overrides (`configs/fashion_mnist_study.py`); "
           f"seeds {list(seeds)}; training eps {r.train_eps:g}, large eps {large:g}. Accuracies "
           "in %, mean ± sample std over seeds. Evaluation on the first "
           f"{r.runs[r.methods[0]][0]['eval']['paper']['num_examples']} test images.",
           "", "## Verdicts", ""]
  for claim, verdict, text in claims(r):
    lines += [f"**{claim}: {verdict}.** {text}", ""]

  lines += ["## Robust accuracy", "",
            "Clean, PGD-20 (weak) and worst case over every attack (paper and strong presets) "
            "at each eps:", ""]
  header = ["method", "clean"] + [f"PGD-20 @{e:g}" for e in r.eps] + [f"worst @{e:g}" for e in r.eps]
  rows = [[NAMES.get(m, m), fmt(r.clean(m))]
          + [fmt(r.attack(m, "paper", "PGD-20", e)) for e in r.eps]
          + [fmt(r.worst(m, e)) for e in r.eps] for m in r.methods]
  lines += [_table(header, rows), "", "![accuracy vs eps](figures/accuracy_vs_eps.png)", ""]
  for e in r.eps:
    cols = [(o, a) for o, a in r.attacks if any(r.attack(m, o, a, e) for m in r.methods)]
    header = ["method"] + [f"{a} (cumulative)" if r.is_cumulative(o, a) else a for o, a in cols]
    rows = [[NAMES.get(m, m)] + [fmt(r.attack(m, o, a, e)) for o, a in cols] for m in r.methods]
    lines += [f"### Every attack at eps {e:g}", "", _table(header, rows), ""]

  lines += ["## Input-Jacobian norms", "",
            f"Mean over {next(iter(r.jacobian.values()))['num_examples'] if r.jacobian else 0} "
            f"clean test points (seed {seeds[0]}); ratio = {NAMES.get(s['baseline'])} / method.",
            ""]
  base = s["baseline"]
  header = ["method"] + list(JACOBIAN_COLUMNS) + [f"ratio {q}" for q in ("logits/fro", "probs/fro")]
  rows = []
  for m in r.methods:
    vals = [r.jac(m, q) for q in JACOBIAN_COLUMNS]
    ratios = [(r.jac(base, q) / r.jac(m, q)) if r.jac(m, q) and r.jac(base, q) else None
              for q in ("logits/fro", "probs/fro")]
    rows.append([NAMES.get(m, m)] + ["-" if v is None else f"{v:.4g}" for v in vals]
                + ["-" if v is None else f"{v:.2f}x" for v in ratios])
  lines += [_table(header, rows), "", "![Jacobian norms](figures/jacobian_histograms.png)", "",
            "## Training curves", "", "![training curves](figures/training_curves.png)", ""]

  lines += ["## Gradient-masking checks", "",
            "Failed checks per run (the paper preset's checks; `uat_jax/evaluate/checks.py`):", ""]
  rows = []
  for m in r.methods:
    for run in r.runs[m]:
      checks = run["eval"]["paper"].get("checks", [])
      failed = [c["name"] for c in checks if not c["passed"]]
      rows.append([NAMES.get(m, m), str(run["seed"]), f"{len(checks) - len(failed)}/{len(checks)}",
                   "; ".join(failed) or "none"])
  lines += [_table(["method", "seed", "passed", "failed"], rows), ""]

  lines += ["## Hyper-parameter sweep (validation split, never the test split)", ""]
  rows = []
  for m, sw in r.sweep.items():
    scored = ", ".join(f"{v}: {100 * _pgd_accuracy(res):.1f}" for v, res in sw["values"].items())
    rows.append([NAMES.get(m, m), sw["key"], scored or "(one value, not swept)", str(sw["chosen"])])
  lines += [_table(["method", "parameter", "PGD accuracy at the training eps (%) per value",
                    "chosen"], rows), ""]
  return "\n".join(lines)


def build(data_dir: str, out_dir: str) -> str:
  r = Results(data_dir)
  if not r.methods:
    raise UatError(f"no runs in {data_dir}")
  figures = os.path.join(out_dir, "figures")
  plot_accuracy_vs_eps(r, os.path.join(figures, "accuracy_vs_eps.png"))
  plot_jacobian_histograms(r, os.path.join(figures, "jacobian_histograms.png"))
  plot_training_curves(r, os.path.join(figures, "training_curves.png"))
  text = markdown(r)
  files.write_atomic(os.path.join(out_dir, "REPORT.md"), text + "\n")
  return text


FLAGS = flags.FLAGS


def _define_flags():
  config_flags.DEFINE_config_file("study", None, "The study config the results come from.",
                                  lock_config=True)
  flags.DEFINE_string("root", None, "The study's root (workdirs); not needed with --from_data.")
  flags.DEFINE_string("out", None, "Where REPORT.md, figures/ and data/ go.")
  flags.DEFINE_bool("from_data", False, "Rebuild the report from OUT/data only.")
  flags.mark_flags_as_required(["out"])


def main():
  data_dir = os.path.join(FLAGS.out, "data")
  if not FLAGS.from_data:
    if FLAGS.study is None or FLAGS.root is None:
      raise UatError("pass --study and --root (or --from_data to rebuild from OUT/data)")
    collect(FLAGS.study, FLAGS.root, data_dir)
  build(data_dir, FLAGS.out)
  print(f"wrote {os.path.join(FLAGS.out, 'REPORT.md')}")


def cli_main():
  _define_flags()
  cli.run_app(main)


if __name__ == "__main__":
  cli_main()
