r"""The study's report: REPORT.md, its figures and the small JSON results it is built from.

  python -m uat_jax.report --study=configs/fashion_mnist_study.py --root=workdirs/study \
      --out=results/fashion_mnist
  python -m uat_jax.report --from_data --out=results/fashion_mnist   # from the committed JSON
  python -m uat_jax.report --from_data --out=results/fashion_mnist --readme=README.md

`collect` copies from the study's workdirs into OUT/data/ only what the report needs: per run
its training curves, its best and last validation numbers, and per evaluation output the
accuracies and the per-example masks (clean, PGD-20 and worst case, hex-packed) that the paired
tests need; per Jacobian run the per-example norms. `build` writes OUT/REPORT.md and
OUT/figures/*.png from OUT/data alone; with --readme, the verdict lines also go into the README
(between two marker lines), so the front page states what the report does. The analysis, the
tests and every verdict threshold are those of the pre-registered plan (docs/study_plan.md); the
labels come from uat_jax.stats. Pieces the study has not finished yet are reported as pending,
never guessed.
"""

from __future__ import annotations

import functools
import glob
import math
import os
from typing import Any, Optional

import numpy as np
from absl import flags
from ml_collections import config_flags

from uat_jax import cli, files, stats
from uat_jax.errors import UatError

NAMES = {"standard": "Standard", "entm": "EntM", "ls": "LS", "at": "AT", "at_entm": "AT+EntM",
         "at_ls": "AT+LS"}
MARGIN = 0.01  # the plan's Delta: 1.0 point
JACOBIAN_PRIMARY = "probs/fro"
WEAK = "PGD-20"
DATASETS = {"fashion_mnist": "Fashion-MNIST", "mnist": "MNIST", "cifar10": "CIFAR-10",
            "cifar100": "CIFAR-100", "svhn_cropped": "SVHN"}
PENDING = "pending (the study has not finished these runs)"
NOT_EVALUATED = "not evaluated"  # the plan does not evaluate this checkpoint at this eps


def output_eps(spec, method: str) -> tuple[float, ...]:
  """The eps at which one evaluation output of a study config (`evals`, `ablation_evals`) runs
  for a method: its `eps_by_method[method]` if given, else its `eps`; empty: the output is not
  run for it. The pipeline (uat_jax.study) and the report read the specs with it; here, so that
  building the report from its JSON needs none of the training stack."""
  by_method = spec.get("eps_by_method") or {}
  return tuple(float(e) for e in by_method.get(method, spec["eps"]))


# --------------------------------------------------------------------------------------------
# Masks: per-example outcomes as '0'/'1' strings in results.json, hex-packed in data/.
# --------------------------------------------------------------------------------------------

def pack(bits: str) -> str:
  """'0'/'1' string -> "<n>:<hex>" (4 examples per character)."""
  n = len(bits)
  padded = bits + "0" * (-n % 4)
  return f"{n}:" + "".join(f"{int(padded[i:i + 4], 2):x}" for i in range(0, len(padded), 4))


@functools.lru_cache(maxsize=None)
def unpack(packed: str) -> np.ndarray:
  """"<n>:<hex>" -> n outcomes in {0, 1} (read-only: the tables and figures ask for the same
  masks many times, so each is decoded once)."""
  n, hexes = packed.split(":")
  bits = "".join(f"{int(h, 16):04b}" for h in hexes)[: int(n)]
  out = np.frombuffer(bits.encode(), np.uint8) - ord("0")
  out.flags.writeable = False
  return out


def _eps_key(table: dict[str, Any], eps: float) -> Optional[str]:
  for k in table:
    if abs(float(k) - eps) < 1e-9:
      return k
  return None


# --------------------------------------------------------------------------------------------
# Collecting the small results from the workdirs.
# --------------------------------------------------------------------------------------------

CURVES = ("eval/pgd_accuracy", "eval/clean_accuracy", "eval/mean_entropy", "train/accuracy_adv",
          "train/accuracy_clean", "train/learning_rate")


def compact_eval(result: dict[str, Any]) -> dict[str, Any]:
  """What the report needs of one results.json: accuracies per attack, the worst case, the
  masking checks and the clean, PGD-20 and worst-case masks."""
  masks: dict[str, Any] = {"clean": pack(result["clean_mask"]),
                           "worst": {e: pack(m) for e, m in result["worst_case"]["mask"].items()}}
  if WEAK in result["attacks"]:
    masks[WEAK] = {e: pack(m) for e, m in result["attacks"][WEAK]["robust_mask"].items()}
  return {
      "checkpoint": result.get("checkpoint"), "checkpoint_step": result.get("checkpoint_step"),
      "num_examples": result["num_examples"], "eps": result["eps"], "preset": result["preset"],
      "clean_accuracy": result["clean_accuracy"], "only_robust": result["only_robust"],
      "attacks": {name: {"accuracy": a.get("accuracy"), "cumulative": a["cumulative"]}
                  for name, a in result["attacks"].items()},
      "worst_case": result["worst_case"]["accuracy"],
      "checks": [{"name": c["name"], "passed": c["passed"]} for c in result.get("checks", [])],
      "masks": masks}


def _first_difference(kept: dict[str, list], new: dict[str, list]) -> Optional[str]:
  """Where two runs' training curves first differ ("train/accuracy_adv at step 39: 0.2 vs
  0.3"), over the steps both logged; None when they agree exactly. A run trained again by the
  same program repeats its curves bit for bit, so exact equality is the test (no tolerance)."""
  for name in sorted(set(kept) & set(new)):
    a, b = dict(map(tuple, kept[name])), dict(map(tuple, new[name]))
    for step in sorted(set(a) & set(b)):
      if a[step] != b[step]:
        return f"{name} at step {step}: {a[step]!r} kept vs {b[step]!r} now"
  return None


def collect(study, root: str, data_dir: str, merge: bool = False) -> dict[str, int]:
  """Copies what the report needs from ROOT into DATA_DIR (small JSON files), for every run of
  the study that has results; returns {"found": n, "missing": m} pieces. With `merge`, what
  DATA_DIR already holds of a run is kept where ROOT lacks it (a study resumed after its
  workdir was lost: the runs it needs are trained again, and their new evaluations join the
  kept ones); a run trained again must have logged exactly the kept training curves (the same
  weights), else UatError and nothing is written."""
  from uat_jax import study as study_lib
  sweep_path = os.path.join(root, "sweep.json")
  if not os.path.exists(sweep_path):
    raise UatError(f"no sweep.json in {root}: run `python -m uat_jax.study` (or "
                   "launch/reproduce.sh) first")
  chosen = files.read_json(sweep_path)
  finals = study_lib.final_runs(study, chosen)
  ablation = study_lib.ablation_runs(study, chosen)
  count = {"found": 0, "missing": 0}
  jacobian_kinds = ["jacobian"] + [f"jacobian_T_{m}" for m in study.jacobian.methods]
  written: dict[str, dict[str, Any]] = {}
  for runs, specs in ((finals, study.evals), (ablation, study.ablation_evals)):
    for run in runs:
      w = study_lib.run_dir(root, run)
      kept_path = os.path.join(data_dir, "runs", f"{run.name}.json")
      kept = files.read_json(kept_path) if merge and os.path.exists(kept_path) else {}
      out: dict[str, Any] = {"name": run.name, "method": run.method, "seed": run.seed,
                             "role": run.role, "variant": run.variant,
                             "dataset": run.config.data.name, "train_eps": run.config.attack.eps,
                             "best_metric": run.config.best_checkpoint.metric,
                             "boundaries": list(run.config.optimizer.boundaries),
                             "evals": dict(kept.get("evals", {}))}
      for key in ["train", "curves"] + jacobian_kinds:
        if key in kept:
          out[key] = kept[key]
      done = study_lib.trained_marker(w)
      if os.path.exists(done):
        curves = files.read_curves(os.path.join(w, "metrics.jsonl"), CURVES)
        differs = _first_difference(kept.get("curves", {}), curves)
        if differs:
          raise UatError(
              f"{run.name} in {root} was trained again and differs from {kept_path} "
              f"({differs}): its kept results belong to other weights; collect without "
              "--merge to report ROOT alone, or retrain with the program that made the kept "
              "data")
        out["train"] = {k: v for k, v in files.read_json(done).items() if k != "workdir"}
        out["curves"] = curves
      if "train" in out:
        count["found"] += 1
      else:
        count["missing"] += 1
      for output in [o for o in specs if output_eps(specs[o], run.method)]:
        path = study_lib.results_marker(w, output)
        if os.path.exists(path):
          out["evals"][output] = compact_eval(files.read_json(path))
        if output in out["evals"]:
          count["found"] += 1
        else:
          count["missing"] += 1
      for kind in jacobian_kinds:
        path = os.path.join(w, "eval", kind, "norms.npz")
        if os.path.exists(path):
          with np.load(path) as z:
            norms = {k: [float(f"{v:.5g}") for v in z[k]] for k in z.files}
          out[kind] = {**files.read_json(os.path.join(w, "eval", kind, "summary.json")),
                       "norms": norms}
          out[kind].pop("mean", None)
        elif (kind == "jacobian" and kind not in out and run.role == "final"
              and run.method in study.jacobian.methods):
          count["missing"] += 1
      written[run.name] = out
  for old in glob.glob(os.path.join(data_dir, "runs", "*.json")):  # from an earlier collection
    os.remove(old)
  for name, out in written.items():
    files.write_json(os.path.join(data_dir, "runs", f"{name}.json"), out, indent=1)
  files.write_json(os.path.join(data_dir, "sweep.json"), chosen, indent=1)
  files.write_json(os.path.join(data_dir, "study.json"), study.to_dict(), indent=1)
  return count


# --------------------------------------------------------------------------------------------
# Reading the collected data.
# --------------------------------------------------------------------------------------------

CHECKPOINTS = {"best": ("paper", "strong"), "last": ("paper_last", "strong_last")}


class Results:
  """The collected data: runs by role and method, sweep, study settings."""

  def __init__(self, data_dir: str):
    self.study = files.read_json(os.path.join(data_dir, "study.json"))
    self.sweep = files.read_json(os.path.join(data_dir, "sweep.json"))
    self.runs = [files.read_json(p) for p in sorted(glob.glob(os.path.join(data_dir, "runs",
                                                                           "*.json")))]
    if not self.runs:
      raise UatError(f"no runs in {data_dir}: collect them first (--study, --root)")
    self.final = {m: sorted([r for r in self.runs if r["role"] == "final" and r["method"] == m],
                            key=lambda r: r["seed"]) for m in NAMES}
    self.ablation: dict[str, list] = {}
    for r in self.runs:
      if r["role"] == "ablation":
        self.ablation.setdefault(r["variant"], []).append(r)
    for v in self.ablation.values():
      v.sort(key=lambda r: r["seed"])
    self.methods = [m for m in self.study["methods"] if self.final[m]]
    self.train_eps = self.runs[0]["train_eps"]
    # The large eps of claims 1 and 5: the study's large_eps, else twice the training eps.
    self.large = float(self.study.get("large_eps") or 2 * self.train_eps)
    evals = self.study["evals"]
    self.outputs = {kind: [o for o in evals if evals[o]["checkpoint"] == kind]
                    for kind in ("best", "last")}
    self.grid = sorted({e for o in self.outputs["best"] for m in self.study["methods"]
                        for e in self.eps_of(o, m)})

  def specs(self, role: str) -> dict[str, Any]:
    """The evaluation outputs of the final runs or (any other role) of the ablation runs."""
    return self.study["evals" if role == "final" else "ablation_evals"]

  def eps_of(self, output: str, method: str, role: str = "final") -> tuple[float, ...]:
    """The eps the study evaluates one output at for a method (empty: not evaluated)."""
    return output_eps(self.specs(role)[output], method)

  def planned(self, run: dict, eps: Optional[float], checkpoint: str = "best") -> list[str]:
    """The outputs of a run's checkpoint that the study evaluates at eps (every one it runs
    for the run's method when eps is None)."""
    outputs = (self.outputs[checkpoint] if run["role"] == "final"
               else list(self.specs(run["role"])))
    return [o for o in outputs
            if (eps_list := self.eps_of(o, run["method"], run["role"]))
            and (eps is None or any(math.isclose(eps, e) for e in eps_list))]

  def present(self, *methods: str) -> list[str]:
    """Those of `methods` the study has (a study may run a subset of them)."""
    return [m for m in methods if m in self.study["methods"]]

  # Per-example outcomes -------------------------------------------------------------------

  def mask(self, run: dict, what: str, eps: Optional[float], checkpoint: str = "best",
           outputs: Optional[list[str]] = None) -> Optional[np.ndarray]:
    """A run's per-example outcome at one checkpoint: "clean" (correct), "PGD-20" (robust to
    PGD-20 at eps) or "worst" (robust to every attack of every output of that checkpoint that
    the study runs at eps: the AND of the outputs' worst-case masks). None when an output it
    needs is missing or the study does not evaluate the checkpoint at eps."""
    outputs = outputs or self.planned(run, None if what == "clean" else eps, checkpoint)
    if not outputs:
      return None
    found = [run["evals"].get(o) for o in outputs]
    if what == "clean":
      return unpack(found[0]["masks"]["clean"]) if found[0] else None
    if what == WEAK:
      ev = next((e for e in found if e and WEAK in e["masks"]), None)
      key = ev and _eps_key(ev["masks"][WEAK], eps)
      return unpack(ev["masks"][WEAK][key]) if key else None
    if any(e is None for e in found):
      return None
    keys = [_eps_key(e["masks"]["worst"], eps) for e in found]
    if any(k is None for k in keys):
      return None
    return np.logical_and.reduce([unpack(e["masks"]["worst"][k]) for e, k in zip(found, keys)]
                                 ).astype(np.uint8)

  def covers(self, runs: list[dict], eps: Optional[float], checkpoint: str = "best") -> bool:
    """Whether the study evaluates every one of the runs' checkpoint at eps."""
    return all(self.planned(x, eps, checkpoint) for x in runs)

  def masks(self, runs: list[dict], what: str, eps: Optional[float],
            checkpoint: str = "best") -> Optional[np.ndarray]:
    """[S, N] outcomes of several runs, or None if any is missing."""
    out = [self.mask(r, what, eps, checkpoint) for r in runs]
    return None if not out or any(m is None for m in out) else np.stack(out)

  def paired(self, m_runs: list[dict], b_runs: list[dict], what: str, eps: Optional[float],
             checkpoint: str = "best") -> Optional[dict[str, Any]]:
    """Mean over paired seeds of (M - B) with the hierarchical bootstrap interval and each
    seed's exact McNemar p-value; None when a result is missing."""
    seeds = sorted({r["seed"] for r in m_runs} & {r["seed"] for r in b_runs})
    m = self.masks([r for r in m_runs if r["seed"] in seeds], what, eps, checkpoint)
    b = self.masks([r for r in b_runs if r["seed"] in seeds], what, eps, checkpoint)
    if m is None or b is None or not seeds:
      return None
    interval = stats.paired_difference(m, b)
    return {"interval": interval, "seeds": seeds,
            "per_seed": list((m.mean(1) - b.mean(1)).astype(float)),
            "mcnemar": [stats.mcnemar_exact(mi, bi) for mi, bi in zip(m, b)]}

  def accuracy(self, runs: list[dict], what: str, eps: Optional[float],
               checkpoint: str = "best") -> Optional[np.ndarray]:
    m = self.masks(runs, what, eps, checkpoint)
    return None if m is None else m.mean(1)

  # Validation curves ------------------------------------------------------------------------

  @staticmethod
  def train_gap(run: dict) -> Optional[float]:
    """Train robust accuracy (PGD-10 on the training batches, the last logging period) minus
    validation PGD-20 accuracy, at the end of training; None without both curves."""
    curves = run.get("curves", {})
    train, val = curves.get("train/accuracy_adv"), curves.get("eval/pgd_accuracy")
    return train[-1][1] - val[-1][1] if train and val else None

  @staticmethod
  def best_and_last(run: dict) -> Optional[tuple[float, float]]:
    """(best, last) logged validation value of the run's best-checkpoint metric."""
    curve = run.get("curves", {}).get(run["best_metric"])
    if not curve:
      return None
    return max(v for _, v in curve), curve[-1][1]

  # Jacobians -------------------------------------------------------------------------------

  @staticmethod
  def norms(runs: list[dict], quantity: str, kind: str = "jacobian") -> Optional[np.ndarray]:
    out = [r.get(kind, {}).get("norms", {}).get(quantity) for r in runs]
    return None if not out or any(v is None for v in out) else np.asarray(out)


# --------------------------------------------------------------------------------------------
# Formatting.
# --------------------------------------------------------------------------------------------

def pts(x: float) -> str:
  return f"{100 * x:+.1f}"


def ci(interval: stats.Interval) -> str:
  return f"{pts(interval.estimate)} [{pts(interval.low)}, {pts(interval.high)}]"


def mean_ci(values: Optional[np.ndarray]) -> str:
  """Mean over seeds in % with the seed-bootstrap interval (one seed: the value alone)."""
  if values is None or not len(values):
    return "pending"
  if len(values) == 1:
    return f"{100 * values[0]:.1f}"
  i = stats.seed_mean(values)
  return f"{100 * i.estimate:.1f} [{100 * i.low:.1f}, {100 * i.high:.1f}]"


def _table(header: list[str], rows: list[list[str]]) -> str:
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def _p(values: list[float]) -> str:
  return ", ".join(f"{p:.2g}" for p in values)


# --------------------------------------------------------------------------------------------
# The claims (docs/study_plan.md, "Outcomes and tests").
# --------------------------------------------------------------------------------------------

def robust_overfitting(r: Results) -> dict[str, Any]:
  """Last minus best validation PGD accuracy over the baseline's seeds (the plan: it occurred
  if the mean is below -1 point and its seed-bootstrap interval lies below 0)."""
  base = r.study["baseline"]
  drops = [bl[1] - bl[0] for bl in (r.best_and_last(x) for x in r.final[base]) if bl]
  if len(drops) < len(r.final[base]):  # the rule is over every seed: none is applied before
    return {"label": PENDING, "trained": len(drops), "seeds": len(r.final[base])}
  i = stats.seed_mean(drops)
  occurred = i.estimate < -MARGIN and i.high < 0
  gaps = [g for g in (r.train_gap(x) for x in r.final[base]) if g is not None]
  return {"interval": i, "drops": drops, "occurred": occurred,
          "gap": stats.seed_mean(gaps) if gaps else None,
          "label": "occurred" if occurred else "did not occur (by the plan's rule)"}


def overfitting_text(ro: dict[str, Any]) -> str:
  """What the final AT runs say about robust overfitting, and what that means for claim 1."""
  if "interval" not in ro:
    return (f"Robust overfitting: pending ({ro['trained']} of the {ro['seeds']} AT seeds "
            "trained).")
  text = ("Robust overfitting in the final AT runs (last minus best validation PGD-20 "
          f"accuracy): {ci(ro['interval'])} points, {ro['label']}")
  if ro["gap"] is not None:
    text += (f"; train minus validation robust accuracy at the end: {ci(ro['gap'])} points")
  if not ro["occurred"]:
    text += (". AT's validation robust accuracy fell by less than the plan's 1 point after its "
             "peak, so claim 1 is tested where there is little robust overfitting for a "
             "regularizer to remove: a null result here does not rule out gains where AT "
             "overfits strongly (longer training, larger models, CIFAR-10)")
  return text + "."


def claim_rows(r: Results) -> list[dict[str, Any]]:
  """One entry per claim: {"claim", "label", "text"}."""
  base, std = r.study["baseline"], r.study["standard_baseline"]
  out = []

  # 1. AT+EntM / AT+LS vs AT, worst case at the large eps (primary: best checkpoint).
  parts, labels = [], []
  for m in r.present("at_entm", "at_ls"):
    for checkpoint, eps, primary in (("best", r.large, True), ("last", r.large, False),
                                     ("best", r.train_eps, False)):
      d = r.paired(r.final[m], r.final[base], "worst", eps, checkpoint)
      if d is None:
        parts.append(f"{NAMES[m]} - AT, {checkpoint} checkpoint, eps {eps:g}: {PENDING}")
        if primary:
          labels.append(f"{NAMES[m]}: pending")
        continue
      label = stats.gain_label(d["interval"], MARGIN)
      weak = r.paired(r.final[m], r.final[base], WEAK, eps, checkpoint)
      parts.append(f"{NAMES[m]} - AT, {checkpoint} checkpoint, eps {eps:g}: {ci(d['interval'])} "
                   f"points, {label}{' (primary)' if primary else ''}; PGD-20 alone "
                   f"{ci(weak['interval']) if weak else 'pending'}; McNemar p per seed "
                   f"{_p(d['mcnemar'])}")
      if primary:
        labels.append(f"{NAMES[m]}: {label}")
  ro_text = overfitting_text(robust_overfitting(r))
  large = ("twice the training eps" if math.isclose(r.large, 2 * r.train_eps)
           else f"the large eps {r.large:g}")
  out.append({"claim": f"1. AT+EntM and AT+LS beat AT at {large} (worst case)",
              "label": "; ".join(labels), "text": "; ".join(parts) + ". " + ro_text})

  # 2. Clean accuracy kept or improved.
  parts, labels = [], []
  for m in r.present("at_entm", "at_ls"):
    d = r.paired(r.final[m], r.final[base], "clean", None)
    if d is None:
      parts.append(f"{NAMES[m]}: {PENDING}")
      labels.append(f"{NAMES[m]}: pending")
      continue
    label = stats.gain_label(d["interval"], MARGIN)
    parts.append(f"{NAMES[m]} - AT clean accuracy: {ci(d['interval'])} points, {label}")
    labels.append(f"{NAMES[m]}: {label}")
  out.append({"claim": "2. AT+EntM and AT+LS keep or improve AT's clean accuracy",
              "label": "; ".join(labels),
              "text": "; ".join(parts) + ". \"No gain, within margin\" is consistent with "
                      "keeping it."})

  # 3. The Jacobian, primary measure probs/fro; controls beside it.
  out.append(jacobian_claim(r))

  # 4. EntM and LS alone vs standard at the smallest eps.
  small = min(r.grid)
  parts, labels = [], []
  for m in r.present("entm", "ls"):
    weak = r.paired(r.final[m], r.final[std], WEAK, small)
    worst = r.paired(r.final[m], r.final[std], "worst", small)
    if weak is None or worst is None:
      parts.append(f"{NAMES[m]}: {PENDING}")
      labels.append(f"{NAMES[m]}: pending")
      continue
    if weak["interval"].low <= 0:
      label = stats.INCONCLUSIVE + " (precondition not met: no PGD-20 gain)"
    elif worst["interval"].high < MARGIN:
      label = "reproduced (gains vanish)"
    elif worst["interval"].low > MARGIN:
      label = "not reproduced (gains persist)"
    else:
      label = stats.INCONCLUSIVE
    parts.append(f"{NAMES[m]} - standard at eps {small:g}: PGD-20 {ci(weak['interval'])}, worst "
                 f"case {ci(worst['interval'])} points: {label}")
    labels.append(f"{NAMES[m]}: {label}")
  out.append({"claim": "4. EntM and LS alone: small-eps gains under PGD-20 vanish under strong "
                       "attacks", "label": "; ".join(labels), "text": "; ".join(parts) + "."})

  # 5. Weak attacks overestimate the uncertainty-promoting models.
  parts, with_gain, pending = [], [], False
  for m, b in (("entm", std), ("ls", std), ("at_entm", base), ("at_ls", base)):
    if m not in r.present(m):
      continue
    for eps in (r.train_eps, r.large):
      weak = r.paired(r.final[m], r.final[b], WEAK, eps)
      over = overestimate(r, r.final[m], r.final[b], eps)
      if weak is None or over is None:
        pending = True
        continue
      if weak["interval"].low > 0:
        with_gain.append(over)
      parts.append(f"{NAMES[m]} at eps {eps:g}: PGD-20 gain {ci(weak['interval'])}, "
                   f"overestimate {ci(over)}")
  if pending and not parts:
    label, pending, parts = "pending", False, [PENDING]
  elif not with_gain:
    label = stats.INCONCLUSIVE + " (precondition not met: no PGD-20 gain to vanish)"
  elif any(o.low > MARGIN for o in with_gain):
    label = "reproduced"
  elif all(o.high < MARGIN for o in with_gain):
    label = "not reproduced"
  else:
    label = stats.INCONCLUSIVE
  out.append({"claim": "5. Weak attacks overestimate uncertainty-promoting models", "label":
              label + (" (some results pending)" if pending and parts else ""),
              "text": "; ".join(parts) + ". Overestimate = gain under PGD-20 minus gain in the "
                      "worst case (points)."})
  return out


def overestimate(r: Results, m_runs, b_runs, eps) -> Optional[stats.Interval]:
  """Gain under PGD-20 minus gain in the worst case, paired by seed: per image, M's (PGD-20
  robust and not worst-case robust) minus B's, each in {0, 1}."""
  seeds = sorted({x["seed"] for x in m_runs} & {x["seed"] for x in b_runs})
  parts = []
  for runs in (m_runs, b_runs):
    runs = [x for x in runs if x["seed"] in seeds]
    weak, worst = r.masks(runs, WEAK, eps), r.masks(runs, "worst", eps)
    if weak is None or worst is None:
      return None
    parts.append((weak & (1 - worst)).astype(np.uint8))
  return stats.paired_difference(*parts)


def jacobian_claim(r: Results) -> dict[str, Any]:
  base = r.study["baseline"]
  claim = "3. EntM shrinks the input-Jacobian norm relative to AT (paper: about 10x)"
  seeds = sorted({x["seed"] for x in r.final[base]} & {x["seed"] for x in r.final["at_entm"]})
  at = [x for x in r.final[base] if x["seed"] in seeds]
  entm = [x for x in r.final["at_entm"] if x["seed"] in seeds]
  b, m = Results.norms(at, JACOBIAN_PRIMARY), Results.norms(entm, JACOBIAN_PRIMARY)
  if b is None or m is None:
    return {"claim": claim, "label": "pending", "text": PENDING + "."}
  ratio = stats.log_ratio_of_means(b, m)
  label = stats.reduction_label(ratio)
  text = [f"AT / AT+EntM mean {JACOBIAN_PRIMARY} (primary): {ratio.estimate:.2f}x "
          f"[{ratio.low:.2f}, {ratio.high:.2f}], {label}"]
  bl, ml = Results.norms(at, "logits/fro"), Results.norms(entm, "logits/fro")
  if bl is not None and ml is not None:
    lr = stats.log_ratio_of_means(bl, ml)
    text.append(f"logit Jacobian (control, scale-confounded): {lr.estimate:.2f}x "
                f"[{lr.low:.2f}, {lr.high:.2f}]")
  t = Results.norms(at, JACOBIAN_PRIMARY, "jacobian_T_at_entm")
  if t is not None:
    tr = stats.log_ratio_of_means(b, t)
    temps = [x["jacobian_T_at_entm"]["temperature"] for x in at]
    text.append(f"AT / temperature-matched AT (T = {np.mean(temps):.2f} on average): "
                f"{tr.estimate:.2f}x [{tr.low:.2f}, {tr.high:.2f}], the part logit scale alone "
                "explains")
  return {"claim": claim, "label": label, "text": "; ".join(text) + "."}


# --------------------------------------------------------------------------------------------
# Robustness margin per image and its relation to the Jacobian norm.
# --------------------------------------------------------------------------------------------

def margins(r: Results, run: dict) -> Optional[np.ndarray]:
  """Per test image the smallest eps of the grid (the eps the run is evaluated at) at which it
  is broken in the worst case (0 when misclassified clean; 1.5 x the largest eps when never
  broken)."""
  grid = [e for e in r.grid if r.planned(run, e)]
  clean = r.mask(run, "clean", None)
  worst = [r.mask(run, "worst", e) for e in grid]
  if clean is None or not grid or any(w is None for w in worst):
    return None
  out = np.full(len(clean), 1.5 * max(grid))
  for e, w in sorted(zip(grid, worst), reverse=True):
    out[w == 0] = e
  out[clean == 0] = 0.0
  return out


def spearman(r: Results, method: str) -> Optional[tuple[float, list[float]]]:
  """Mean over seeds of Spearman's rho between the primary Jacobian norm and the margin, on
  the images both cover."""
  from scipy import stats as scipy_stats  # deferred: only the report needs scipy
  rhos = []
  for run in r.final[method]:
    norms = run.get("jacobian", {}).get("norms", {}).get(JACOBIAN_PRIMARY)
    m = margins(r, run)
    if norms is None or m is None:
      continue
    n = min(len(norms), len(m))
    rhos.append(float(scipy_stats.spearmanr(norms[:n], m[:n]).statistic))
  return (float(np.mean(rhos)), rhos) if rhos else None


# --------------------------------------------------------------------------------------------
# Figures.
# --------------------------------------------------------------------------------------------

def plot_differences(r: Results, path: str) -> None:
  """Each method minus its baseline against eps (worst case, best checkpoint): per-seed dots,
  the mean and the bootstrap band."""
  plt = files.pyplot()
  base, std = r.study["baseline"], r.study["standard_baseline"]
  panels = ([(m, base) for m in r.present("at_entm", "at_ls")],
            [(m, std) for m in r.present("entm", "ls")])
  fig, axes = plt.subplots(1, 2, figsize=(11, 4), dpi=120)
  for ax, pairs in zip(axes, panels):
    for k, (m, b) in enumerate(pairs):
      xs, est, low, high = [], [], [], []
      for e in r.grid:
        d = r.paired(r.final[m], r.final[b], "worst", e)
        if d is None:
          continue
        xs.append(e)
        est.append(100 * d["interval"].estimate)
        low.append(100 * d["interval"].low)
        high.append(100 * d["interval"].high)
        jitter = (k - 0.5) * 0.004
        ax.scatter([e + jitter] * len(d["per_seed"]), [100 * v for v in d["per_seed"]], s=10,
                   color=f"C{k}", alpha=0.6)
      if xs:
        ax.plot(xs, est, marker="o", color=f"C{k}", label=f"{NAMES[m]} - {NAMES[b]}")
        ax.fill_between(xs, low, high, color=f"C{k}", alpha=0.2)
    ax.axhline(0, color="black", lw=0.8)
    for y in (-100 * MARGIN, 100 * MARGIN):
      ax.axhline(y, color="grey", lw=0.6, ls=":")
    ax.axvline(r.train_eps, color="grey", lw=0.8, ls="--")
    ax.set_xlabel("L-inf eps")
    ax.set_ylabel("worst-case robust accuracy difference (points)")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
      ax.legend(fontsize=8)
  axes[0].set_title("vs AT (best checkpoints)")
  axes[1].set_title("vs standard training (best checkpoints)")
  files.save_figure(fig, path)


def plot_overfitting(r: Results, path: str) -> None:
  """Train (PGD-10 on the training batches) and validation (PGD-20) robust accuracy of every
  seed of the adversarially trained methods, learning-rate decays marked."""
  plt = files.pyplot()
  methods = [m for m in ("at", "at_entm", "at_ls") if r.final.get(m)]
  fig, axes = plt.subplots(1, max(len(methods), 1), figsize=(5 * max(len(methods), 1), 3.8),
                           dpi=120, sharey=True, squeeze=False)
  for ax, m in zip(axes[0], methods):
    for k, run in enumerate(r.final[m]):
      curves = run.get("curves", {})
      for key, style, label in (("train/accuracy_adv", "--", "train (PGD-10)"),
                                ("eval/pgd_accuracy", "-", "validation (PGD-20)")):
        if curves.get(key):
          s, v = zip(*curves[key])
          ax.plot(s, v, style, color=f"C{k}", lw=0.9,
                  label=f"seed {run['seed']} {label}" if k == 0 or key.startswith("eval") else
                  None)
      if curves.get("eval/pgd_accuracy") and k == 0:
        last = curves["eval/pgd_accuracy"][-1][0]
        for bnd in run["boundaries"]:
          ax.axvline(bnd * last, color="grey", lw=0.8, ls=":")
    ax.set_title(f"{NAMES[m]}: robust accuracy at eps {r.train_eps:g}")
    ax.set_xlabel("training step (dotted: learning-rate decays)")
    ax.grid(alpha=0.3)
  axes[0][0].set_ylabel("robust accuracy")
  if axes[0][0].get_legend_handles_labels()[0]:
    axes[0][0].legend(fontsize=6)
  files.save_figure(fig, path)


def plot_jacobian_margin(r: Results, path: str) -> None:
  """Primary Jacobian norm against the worst-case robustness margin per test image."""
  plt = files.pyplot()
  fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
  for k, m in enumerate(r.study["jacobian"]["methods"]):
    xs, ys = [], []  # (k - 1) * 0.004: methods side by side at each margin
    for run in r.final.get(m, []):
      norms = run.get("jacobian", {}).get("norms", {}).get(JACOBIAN_PRIMARY)
      mg = margins(r, run)
      if norms is None or mg is None:
        continue
      n = min(len(norms), len(mg))
      xs += list(mg[:n] + (k - 1) * 0.004)
      ys += norms[:n]
    if xs:
      ax.scatter(xs, ys, s=3, alpha=0.3, color=f"C{k}", label=NAMES[m])
  ax.set_yscale("log")
  ax.set_xlabel("robustness margin: smallest eps broken in the worst case (0: misclassified)")
  ax.set_ylabel(f"|J| {JACOBIAN_PRIMARY}")
  ax.grid(alpha=0.3)
  if ax.get_legend_handles_labels()[0]:
    ax.legend(fontsize=8, markerscale=4)
  files.save_figure(fig, path)


# --------------------------------------------------------------------------------------------
# REPORT.md
# --------------------------------------------------------------------------------------------

def headline(claim: dict[str, Any]) -> str:
  """A claim's verdict line: its number, statement and label(s), in bold."""
  return f"**{claim['claim']}: {claim['label']}.**"


README_BEGIN = "<!-- verdicts: written by python -m uat_jax.report --readme -->"
README_END = "<!-- /verdicts -->"


def readme_block(claims: list[dict[str, Any]]) -> str:
  """The README's verdict list: each claim's headline (of `claim_rows`) as REPORT.md states it."""
  return "\n".join([README_BEGIN] + [f"- {headline(c)}" for c in claims] + [README_END])


def readme_parts(readme: str) -> tuple[str, str]:
  """README `readme`'s text before and after its verdict block (markers included in the block);
  one line naming the fix if the file or a marker is missing."""
  try:
    with open(readme) as f:
      text = f.read()
  except OSError as e:
    raise UatError(f"cannot read the README {readme} ({e.strerror}): pass an existing file to "
                   "--readme") from None
  start, end = text.find(README_BEGIN), text.find(README_END)
  if start < 0 or end < start:
    raise UatError(f"{readme} has no verdict block: add the lines {README_BEGIN!r} and "
                   f"{README_END!r} where the verdicts go")
  return text[:start], text[end + len(README_END):]


def write_readme(readme: str, block: str) -> None:
  """Replaces the verdict block of README `readme` (between its two markers) by `block`."""
  before, after = readme_parts(readme)
  files.write_atomic(readme, before + block + after)


def status(r: Results) -> list[str]:
  rows = []
  for m in r.methods + [v for v in r.ablation]:
    runs = r.final.get(m) or r.ablation.get(m, [])
    trained = sum("train" in x for x in runs)
    role = "final" if m in r.final else "ablation"
    evaluated = {o: sum(o in x["evals"] for x in runs) for o in r.specs(role)
                 if r.eps_of(o, runs[0]["method"], role)}
    rows.append([NAMES.get(m, m), f"{trained}/{len(runs)}"] +
                [", ".join(f"{o} {n}/{len(runs)}" for o, n in evaluated.items())])
  return [_table(["runs", "trained", "evaluated"], rows)]


def markdown(r: Results, claims: Optional[list[dict[str, Any]]] = None) -> str:
  """REPORT.md's text; `claims`: claim_rows(r) when the caller has them already."""
  s = r.study
  base = s["baseline"]
  n = next(iter(s["evals"].values()))["num_examples"]
  dataset = DATASETS.get(r.runs[0]["dataset"], r.runs[0]["dataset"])
  lines = [f"# Whether and how uncertainty promotion improves robustness: {dataset}", "",
           "Built by `python -m uat_jax.report` from the JSON in `data/` under the "
           "pre-registered plan (`docs/study_plan.md`, committed before the runs). Training eps "
           f"{r.train_eps:g}; the paper's larger eps is {r.large:g}. Differences are in "
           "accuracy points, mean over paired seeds with a 95% hierarchical bootstrap interval "
           "(seeds, then test images) in brackets; the margin is 1 point. The worst case is per "
           "test image over every attack of both presets (`paper` and `strong`) of one "
           f"checkpoint. Evaluation on the first {n} test images.", "",
           "## Status", ""] + status(r) + ["", "## Verdicts", ""]
  for c in claim_rows(r) if claims is None else claims:
    lines += [f"{headline(c)} {c['text']}", ""]

  lines += ["## Robust overfitting", "",
            "Validation numbers of every final run (the best-checkpoint metric: PGD-20 "
            "accuracy at the training eps for the adversarially trained methods, clean accuracy "
            "for the others), best over training and at the end:", ""]
  rows = []
  for m in r.methods:
    for run in r.final[m]:
      bl, gap = r.best_and_last(run), r.train_gap(run)
      rows.append([NAMES[m], str(run["seed"]), run["best_metric"],
                   "pending" if not bl else f"{100 * bl[0]:.1f}",
                   "pending" if not bl else f"{100 * bl[1]:.1f}",
                   "pending" if not bl else pts(bl[1] - bl[0]),
                   "" if gap is None else pts(gap)])
  lines += [_table(["method", "seed", "metric", "best", "last", "last - best",
                    "train - validation robust at the end"], rows), "",
            overfitting_text(robust_overfitting(r)), "",
            "![train vs validation robust accuracy](figures/robust_overfitting.png)", ""]

  lines += ["## Best and last checkpoint", "",
            "Accuracy (%), mean over seeds with the seed-bootstrap interval:", ""]
  header = ["method", "checkpoint", "clean"] + [f"PGD-20 @{e:g}" for e in (r.train_eps, r.large)] \
      + [f"worst @{e:g}" for e in (r.train_eps, r.large)]
  rows = []
  for m in r.methods:
    for cp in ("best", "last"):
      cell = lambda what, e: (mean_ci(r.accuracy(r.final[m], what, e, cp))
                              if r.covers(r.final[m], e, cp) else NOT_EVALUATED)
      rows.append([NAMES[m], cp, cell("clean", None)]
                  + [cell(what, e) for what in (WEAK, "worst") for e in (r.train_eps, r.large)])
  lines += [_table(header, rows), ""]

  lines += ["## Differences to the baseline", "",
            "Worst case, best checkpoint, per eps (AT+EntM and AT+LS against AT; EntM and LS "
            "against standard):", ""]
  header = ["method"] + [f"eps {e:g}" for e in r.grid]
  rows = []
  for m in r.methods:
    b = base if m.startswith("at_") else s["standard_baseline"] if m in ("entm", "ls") else None
    if b is None:
      continue
    cells = []
    for e in r.grid:
      d = r.paired(r.final[m], r.final[b], "worst", e)
      cells.append(NOT_EVALUATED if not r.covers(r.final[m] + r.final[b], e)
                   else "pending" if d is None else ci(d["interval"]))
    rows.append([f"{NAMES[m]} - {NAMES[b]}"] + cells)
  lines += [_table(header, rows), "", "![differences](figures/differences_vs_eps.png)", "",
            "Accuracy per eps (%, best checkpoint; PGD-20 / worst case):", ""]
  rows = [[NAMES[m], mean_ci(r.accuracy(r.final[m], "clean", None))]
          + [f"{mean_ci(r.accuracy(r.final[m], WEAK, e))} / "
             f"{mean_ci(r.accuracy(r.final[m], 'worst', e))}" if r.covers(r.final[m], e)
             else NOT_EVALUATED for e in r.grid]
          for m in r.methods]
  lines += [_table(["method", "clean"] + [f"eps {e:g}" for e in r.grid], rows), ""]

  lines += jacobian_section(r) + ablation_section(r) + checks_section(r) + sweep_section(r)
  return "\n".join(lines)


def jacobian_section(r: Results) -> list[str]:
  base = r.study["baseline"]
  lines = ["## Input-Jacobian norms", "",
           f"Per test image on the first {r.study['jacobian']['num_examples']} test images, best "
           "checkpoints; ratios are AT / method (geometric mean over seeds of the ratio of mean "
           "norms, hierarchical bootstrap interval). `T-matched AT` is AT with its logits "
           "divided by the temperature at which its mean predictive entropy on validation "
           "images equals the method's.", ""]
  rows = []
  for m in r.study["jacobian"]["methods"]:
    if m == base or not r.final.get(m):
      continue
    seeds = sorted({x["seed"] for x in r.final[base]} & {x["seed"] for x in r.final[m]})
    at = [x for x in r.final[base] if x["seed"] in seeds]
    other = [x for x in r.final[m] if x["seed"] in seeds]
    cells = []
    for q in ("probs/fro", "logits/fro", "probs/spectral"):
      b, v = Results.norms(at, q), Results.norms(other, q)
      if b is None or v is None:
        cells.append("pending")
        continue
      i = stats.log_ratio_of_means(b, v)
      cells.append(f"{i.estimate:.2f}x [{i.low:.2f}, {i.high:.2f}]")
    t = Results.norms(at, JACOBIAN_PRIMARY, f"jacobian_T_{m}")
    b = Results.norms(at, JACOBIAN_PRIMARY)
    if t is None or b is None:
      cells.append("pending")
    else:
      i = stats.log_ratio_of_means(b, t)
      temps = np.mean([x[f"jacobian_T_{m}"]["temperature"] for x in at])
      cells.append(f"{i.estimate:.2f}x [{i.low:.2f}, {i.high:.2f}] (T {temps:.2f})")
    rows.append([NAMES[m]] + cells)
  lines += [_table(["method", "AT / method probs/fro", "logits/fro", "probs/spectral",
                    "AT / T-matched AT probs/fro"], rows), ""]
  rows = []
  for m in r.study["jacobian"]["methods"]:
    sp = spearman(r, m)
    rows.append([NAMES[m], "pending" if sp is None else
                 f"{sp[0]:+.2f} ({', '.join(f'{x:+.2f}' for x in sp[1])})"])
  lines += ["Spearman correlation per test image between the primary norm and the worst-case "
            "robustness margin (mean over seeds; per seed in brackets):", "",
            _table(["method", "rho"], rows), "",
            "![Jacobian norm vs margin](figures/jacobian_vs_margin.png)", ""]
  return lines


def ablation_section(r: Results) -> list[str]:
  base = r.study["baseline"]
  ab = r.study["ablation"]
  lines = ["## Ablation (exploratory, no verdicts)", "",
           f"{NAMES[ab['method']]} variants minus AT on the same seeds ({list(ab['seeds'])}), "
           "best checkpoints, worst case over both presets at each eps; points with 95% "
           "intervals. The final runs use `regularizer.on=adversarial` and `attack.loss=ce`.", ""]
  variants = [("adversarial, ce (final runs)",
               [x for x in r.final.get(ab["method"], []) if x["seed"] in ab["seeds"]])]
  variants += [(v, r.ablation[v]) for v in ab["variants"] if v in r.ablation]
  rows = []
  for name, runs in variants:
    at = [x for x in r.final[base] if x["seed"] in ab["seeds"]]
    cells = []
    for what, eps in (("clean", None), ("worst", r.train_eps), ("worst", r.large)):
      d = r.paired(runs, at, what, eps)  # an ablation run's mask: its own outputs
      cells.append(NOT_EVALUATED if runs and not r.covers(runs + at, eps)
                   else "pending" if d is None else ci(d["interval"]))
    rows.append([name] + cells)
  lines += [_table(["variant", "clean", f"worst @{r.train_eps:g}", f"worst @{r.large:g}"], rows),
            ""]
  return lines


def checks_section(r: Results) -> list[str]:
  rows = []
  for m in r.methods:
    for run in r.final[m]:
      ev = run["evals"].get("paper")
      if not ev:
        continue
      failed = [c["name"] for c in ev["checks"] if not c["passed"]]
      rows.append([NAMES[m], str(run["seed"]),
                   f"{len(ev['checks']) - len(failed)}/{len(ev['checks'])}",
                   "; ".join(failed) or "none"])
  return ["## Gradient-masking checks", "", "The paper preset's checks on the best checkpoints "
          "(`uat_jax/evaluate/checks.py`):", "",
          _table(["method", "seed", "passed", "failed"], rows), ""]


def sweep_section(r: Results) -> list[str]:
  rows = []
  for m, sw in r.sweep.items():
    scored = ", ".join(f"{v}: {100 * x:.1f}" for v, x in sw["values"].items())
    rows.append([NAMES.get(m, m), sw["key"], sw.get("metric", ""),
                 scored or "(one value, not swept)", str(sw["chosen"])])
  sources = sorted({sw["source"] for sw in r.sweep.values() if sw.get("source")})
  note = ([f"Taken from the finished sweep in `{', '.join(sources)}` (the study's `sweep_from`): "
           "its runs are not retrained, and the first seed's final run of the chosen value is "
           "trained anew, so its validation score can differ from the sweep's.", ""]
          if sources else [])
  return ["## Sweep (validation split, final schedule, first seed)", "", *note,
          _table(["method", "parameter", "score (best logged, %)", "per value", "chosen"], rows),
          ""]


def build(data_dir: str, out_dir: str, readme: Optional[str] = None) -> str:
  """Writes OUT/REPORT.md and OUT/figures/ from `data_dir`, and the verdict lines into README
  `readme` if given; returns REPORT.md's text."""
  r = Results(data_dir)
  figures = os.path.join(out_dir, "figures")
  plot_differences(r, os.path.join(figures, "differences_vs_eps.png"))
  plot_overfitting(r, os.path.join(figures, "robust_overfitting.png"))
  plot_jacobian_margin(r, os.path.join(figures, "jacobian_vs_margin.png"))
  claims = claim_rows(r)
  text = markdown(r, claims)
  files.write_atomic(os.path.join(out_dir, "REPORT.md"), text + "\n")
  if readme:
    write_readme(readme, readme_block(claims))
  return text


FLAGS = flags.FLAGS


def _define_flags():
  config_flags.DEFINE_config_file("study", None, "The study config the results come from.",
                                  lock_config=True)
  flags.DEFINE_string("root", None, "The study's root (workdirs); not needed with --from_data.")
  flags.DEFINE_string("out", None, "Where REPORT.md, figures/ and data/ go.")
  flags.DEFINE_bool("from_data", False, "Rebuild the report from OUT/data only.")
  flags.DEFINE_bool("merge", False, "Keep what OUT/data holds of the pieces ROOT lacks (a study "
                    "resumed after its workdir was lost); a run trained again must repeat the "
                    "kept training curves exactly.")
  flags.DEFINE_string("readme", None, "Also write the verdicts into this README, between its "
                      f"lines {README_BEGIN!r} and {README_END!r}.")
  flags.mark_flags_as_required(["out"])


def main():
  data_dir = os.path.join(FLAGS.out, "data")
  if FLAGS.readme:
    readme_parts(FLAGS.readme)  # a README without its verdict block fails before any work
  if not FLAGS.from_data:
    if FLAGS.study is None or FLAGS.root is None:
      raise UatError("pass --study and --root (or --from_data to rebuild from OUT/data)")
    count = collect(FLAGS.study, FLAGS.root, data_dir, FLAGS.merge)
    print(f"collected {count['found']} results ({count['missing']} pending)")
  build(data_dir, FLAGS.out, FLAGS.readme)
  print(f"wrote {os.path.join(FLAGS.out, 'REPORT.md')}")
  if FLAGS.readme:
    print(f"wrote the verdicts into {FLAGS.readme}")


def cli_main():
  _define_flags()
  cli.run_app(main)


if __name__ == "__main__":
  cli_main()
