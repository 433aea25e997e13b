"""The collected study data as the report reads it: runs by role and method, per-example
outcomes (clean, PGD-20, worst case) of a checkpoint at an eps, paired differences between
methods, validation curves, Jacobian norms and per-image robustness margins."""

from __future__ import annotations

import glob
import math
import os
from typing import Any, Optional

import numpy as np

from uat_jax import files, masks, stats
from uat_jax.errors import UatError
from uat_jax.study import spec

NAMES = {"standard": "Standard", "entm": "EntM", "ls": "LS", "at": "AT", "at_entm": "AT+EntM",
         "at_ls": "AT+LS", "at_wa": "AT+WA"}  # AT+WA: AT with weight averaging, the control
WEAK = "PGD-20"
JACOBIAN_PRIMARY = "probs/fro"
DATASETS = {"fashion_mnist": "Fashion-MNIST", "mnist": "MNIST", "cifar10": "CIFAR-10",
            "cifar100": "CIFAR-100", "svhn_cropped": "SVHN"}
PENDING = "pending (the study has not finished these runs)"
NOT_EVALUATED = "not evaluated"  # the plan does not evaluate this checkpoint at this eps


def _eps_key(table: dict[str, Any], eps: float) -> Optional[str]:
  for k in table:
    if abs(float(k) - eps) < 1e-9:
      return k
  return None


class Results:
  """The collected data: runs by role and method, sweep, study settings."""

  def __init__(self, data_dir: str):
    if not os.path.exists(os.path.join(data_dir, "study.json")):
      raise UatError(f"no collected study in {data_dir}: collect it first (--study, --root) or "
                     "pass the --out of a collected report")
    self.study = files.read_json(os.path.join(data_dir, "study.json"))
    self.sweep = files.read_json(os.path.join(data_dir, "sweep.json"))
    superseded = os.path.join(data_dir, "verdicts_v2.json")  # the plan's earlier statistics
    self.superseded = files.read_json(superseded) if os.path.exists(superseded) else None
    pilot = os.path.join(data_dir, "pilot_v3.json")  # the v3 pilot's outcome so far
    self.pilot_v3 = files.read_json(pilot) if os.path.exists(pilot) else None
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
    return spec.output_eps(self.specs(role)[output], method)

  def plans(self, run: dict, output: str) -> bool:
    """Whether the study runs an output on a run (its method's eps, its seeds)."""
    spec = self.specs(run["role"])[output]
    return bool(self.eps_of(output, run["method"], run["role"])) and run["seed"] in (
        spec.get("seeds") or (run["seed"],))

  def planned(self, run: dict, eps: Optional[float], checkpoint: str = "best",
              checks: bool = False) -> list[str]:
    """The outputs of a run's checkpoint that the study evaluates at eps (every one it runs
    for the run's method when eps is None) and that make the verdicts' worst case, or with
    `checks` those that are checks beside it (`worst_case` False: the convergence check)."""
    role = run["role"]
    outputs = self.outputs[checkpoint] if role == "final" else list(self.specs(role))
    return [o for o in outputs
            if self.plans(run, o) and self.specs(role)[o].get("worst_case", True) != checks
            and (eps is None or any(math.isclose(eps, e)
                                    for e in self.eps_of(o, run["method"], role)))]

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
      return masks.unpack(found[0]["masks"]["clean"]) if found[0] else None
    if what == WEAK:
      ev = next((e for e in found if e and WEAK in e["masks"]), None)
      key = ev and _eps_key(ev["masks"][WEAK], eps)
      return masks.unpack(ev["masks"][WEAK][key]) if key else None
    if any(e is None for e in found):
      return None
    keys = [_eps_key(e["masks"]["worst"], eps) for e in found]
    if any(k is None for k in keys):
      return None
    return np.logical_and.reduce([masks.unpack(e["masks"]["worst"][k]) for e, k in zip(found, keys)]
                                 ).astype(np.uint8)

  def covers(self, runs: list[dict], eps: Optional[float], checkpoint: str = "best") -> bool:
    """Whether the study evaluates every one of the runs' checkpoint at eps."""
    return all(self.planned(x, eps, checkpoint) for x in runs)

  def masks(self, runs: list[dict], what: str, eps: Optional[float],
            checkpoint: str = "best") -> Optional[np.ndarray]:
    """[S, N] outcomes of several runs, or None if any is missing."""
    out = [self.mask(r, what, eps, checkpoint) for r in runs]
    return None if not out or any(m is None for m in out) else np.stack(out)

  @staticmethod
  def pair(m_runs: list[dict], b_runs: list[dict]) -> tuple[list[dict], list[dict], list[int]]:
    """The runs of two methods on the seeds both have, in seed order, and those seeds: every
    paired comparison of the report pairs this way."""
    seeds = sorted({r["seed"] for r in m_runs} & {r["seed"] for r in b_runs})
    return ([r for r in m_runs if r["seed"] in seeds], [r for r in b_runs if r["seed"] in seeds],
            seeds)

  def paired(self, m_runs: list[dict], b_runs: list[dict], what: str, eps: Optional[float],
             checkpoint: str = "best") -> Optional[dict[str, Any]]:
    """Mean over paired seeds of (M - B): its estimate (stats.paired_difference), 95%
    interval and each seed's exact McNemar p-value; None when a result is missing."""
    m_runs, b_runs, seeds = self.pair(m_runs, b_runs)
    m = self.masks(m_runs, what, eps, checkpoint)
    b = self.masks(b_runs, what, eps, checkpoint)
    if m is None or b is None or not seeds:
      return None
    estimate = stats.paired_difference(m, b)
    return {"estimate": estimate, "interval": estimate.interval(), "seeds": seeds,
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
  def fall_after_decay(run: dict) -> Optional[float]:
    """Mean validation value of the run's best-checkpoint metric over the evaluations between
    the two learning-rate decays minus its mean over those after the second (positive: it
    fell; the plan's v3 measure of robust overfitting); None without evaluations in both."""
    curve = run.get("curves", {}).get(run["best_metric"])
    bounds = run.get("boundaries")
    if not curve or not bounds or len(bounds) < 2:
      return None
    total = (run.get("train") or {}).get("step") or curve[-1][0]
    first, second = bounds[0] * total, bounds[1] * total
    between = [v for s, v in curve if first < s <= second]
    after = [v for s, v in curve if s > second]
    return float(np.mean(between) - np.mean(after)) if between and after else None

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
