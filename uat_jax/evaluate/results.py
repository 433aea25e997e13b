"""A suite's results: the typed SuiteResult (per-example masks, accuracies, JSON), the resumable
per-(attack, eps) store, and the reports an evaluation writes (results.json / .csv / .md,
masking_checks.md, accuracy_vs_eps.png)."""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import json
import os
import re
from typing import Any, Callable, Optional

import numpy as np
from absl import logging

from uat_jax import masks as mask_codec, provenance, sharding, tables
from uat_jax.errors import UatError
from uat_jax.files import pyplot, save_figure, write_atomic, write_json

# --------------------------------------------------------------------------------------------
# The typed result.
# --------------------------------------------------------------------------------------------

def _mask_array(text: str) -> np.ndarray:
  return mask_codec.unpack(text).astype(bool)


def _by_eps(table: dict) -> dict[float, Any]:
  return {float(k): v for k, v in table.items()}


@dataclasses.dataclass
class AttackResult:
  """One suite entry over the eps grid. `robust[eps]` is per example: still classified correctly
  after this attack (under only_robust: False on the points it was not run on, which an earlier
  attack had broken). `accuracy` is the attack's own accuracy, None under only_robust except for
  the first attack; `cumulative` the worst case after it; `attacked` the points it ran on;
  `adversarial[eps]` the adversarial images (only when run_suite(..., return_adversarial=True))."""
  name: str
  config: dict[str, Any]
  kind: str
  robust: dict[float, np.ndarray]
  cumulative: dict[float, float]
  attacked: dict[float, int]
  accuracy: Optional[dict[float, float]] = None
  seconds: float = 0.0
  adversarial: Optional[dict[float, np.ndarray]] = None


@dataclasses.dataclass
class SuiteResult:
  """What run_suite returns. Masks are boolean numpy arrays over the N examples; dictionaries
  over the eps grid are keyed by float eps.

      result.clean_accuracy, result.worst_case_accuracy[0.1], result.worst[0.1] (mask)
      result.attacks["PGD-20"].accuracy[0.1], result.attacks["PGD-20"].robust[0.1] (mask)
      result.to_json() / SuiteResult.from_json(d)   (results.json; eps keys as strings)"""
  num_examples: int
  eps: tuple[float, ...]
  only_robust: bool
  clean: np.ndarray
  attacks: dict[str, AttackResult]
  worst: dict[float, np.ndarray]
  skipped: list[dict[str, str]] = dataclasses.field(default_factory=list)
  extra: dict[str, Any] = dataclasses.field(default_factory=dict)
  checks: list[dict[str, Any]] = dataclasses.field(default_factory=list)
  info: dict[str, Any] = dataclasses.field(default_factory=dict)  # workdir, step, method, ...

  @property
  def clean_accuracy(self) -> float:
    return float(self.clean.mean())

  @property
  def worst_case_accuracy(self) -> dict[float, float]:
    return {e: float(m.mean()) for e, m in self.worst.items()}

  def to_json(self, masks: bool = True) -> dict[str, Any]:
    """The results.json layout: accuracies keyed by str(eps) (JSON keys are strings), per-example
    masks packed by uat_jax.masks (unless masks=False), and `info`'s entries at the top level."""
    out: dict[str, Any] = {
        "schema_version": provenance.SCHEMA_VERSION,
        "num_examples": self.num_examples, "clean_accuracy": self.clean_accuracy,
        "eps": list(self.eps), "only_robust": self.only_robust, "attacks": {},
        "worst_case": {"accuracy": {str(e): v for e, v in self.worst_case_accuracy.items()},
                       "cumulative": {}},
        "skipped": self.skipped, "extra": self.extra}
    if self.checks:
      out["checks"] = self.checks
    for name, a in self.attacks.items():
      r = {"config": a.config, "kind": a.kind,
           "cumulative": {str(e): v for e, v in a.cumulative.items()},
           "attacked": {str(e): v for e, v in a.attacked.items()}, "seconds": a.seconds}
      if a.accuracy is not None:
        r["accuracy"] = {str(e): v for e, v in a.accuracy.items()}
      if masks:
        r["robust_mask"] = {str(e): mask_codec.pack(m) for e, m in a.robust.items()}
      out["attacks"][name] = r
      out["worst_case"]["cumulative"][name] = r["cumulative"]
    if masks:
      out["clean_mask"] = mask_codec.pack(self.clean)
      out["worst_case"]["mask"] = {str(e): mask_codec.pack(m) for e, m in self.worst.items()}
    out.update(self.info)
    return out

  @classmethod
  def from_json(cls, d: dict[str, Any]) -> "SuiteResult":
    """The inverse of to_json(masks=True) (results.json). Accuracies derive from the
    per-example masks, so a result without them is refused rather than read as all-wrong."""
    if "clean_mask" not in d or "mask" not in d["worst_case"]:
      raise UatError("this result has no per-example masks (saved with to_json(masks=False) or "
                     "by an older version): read its accuracies from the JSON, or evaluate again")
    n = int(d["num_examples"])
    attacks = {}
    for name, r in d["attacks"].items():
      robust = {float(e): _mask_array(t) for e, t in r.get("robust_mask", {}).items()}
      attacks[name] = AttackResult(
          name=name, config=r["config"], kind=r["kind"], robust=robust,
          cumulative=_by_eps(r["cumulative"]), attacked=_by_eps(r["attacked"]),
          accuracy=_by_eps(r["accuracy"]) if "accuracy" in r else None,
          seconds=r.get("seconds", 0.0))
    known = {"schema_version", "num_examples", "clean_accuracy", "eps", "only_robust", "attacks", "worst_case",
             "skipped", "extra", "checks", "clean_mask"}
    return cls(
        num_examples=n, eps=tuple(float(e) for e in d["eps"]), only_robust=d["only_robust"],
        clean=_mask_array(d["clean_mask"]), attacks=attacks,
        worst={float(e): _mask_array(t) for e, t in d["worst_case"]["mask"].items()},
        skipped=d.get("skipped", []), extra=d.get("extra", {}), checks=d.get("checks", []),
        info={k: v for k, v in d.items() if k not in known})


# --------------------------------------------------------------------------------------------
# Resumable per-(attack, eps) results.
# --------------------------------------------------------------------------------------------

class ResultStore:
  """Per-example results of finished (attack, eps) pairs as .npy files in `directory`, keyed by a
  hash of everything they depend on (`fingerprint`: checkpoint, examples, seed; the entry; the
  earlier entries under only_robust). A killed evaluation rerun finds and skips them."""

  def __init__(self, directory: str, fingerprint: dict[str, Any]):
    self.directory = directory
    self.fingerprint = fingerprint
    if sharding.is_chief():
      os.makedirs(directory, exist_ok=True)

  def _path(self, name: str, key: dict[str, Any]) -> str:
    blob = json.dumps({"fingerprint": self.fingerprint, **key}, sort_keys=True, default=str)
    digest = hashlib.sha1(blob.encode()).hexdigest()[:12]
    return os.path.join(self.directory, f"{re.sub(r'[^A-Za-z0-9.]+', '_', name)}-{digest}.npy")

  def get(self, name: str, key: dict[str, Any]) -> Optional[np.ndarray]:
    path = self._path(name, key)
    if not os.path.exists(path):
      return None
    try:
      return np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:  # a damaged file: recompute it
      logging.warning("ignoring unreadable evaluation state %s (%s)", path, e)
      return None

  def put(self, name: str, key: dict[str, Any], value: np.ndarray) -> None:
    buf = io.BytesIO()
    np.save(buf, np.asarray(value), allow_pickle=False)
    write_atomic(self._path(name, key), buf.getvalue())


def cached(store: Optional[ResultStore], name: str, key: dict[str, Any],
           compute: Callable[[], np.ndarray]) -> np.ndarray:
  """`compute()`, or the result `store` kept for (name, key); a computed result is kept."""
  if store is None:
    return compute()
  value = store.get(name, key)
  if value is None:
    value = compute()
    store.put(name, key, value)
  else:
    logging.info("%s: loaded the finished result from %s", name, store.directory)
  return value


# --------------------------------------------------------------------------------------------
# Reports.
# --------------------------------------------------------------------------------------------

def format_table(result: dict[str, Any]) -> str:
  """Markdown: robust accuracy per attack, the cumulative worst case, and the checks."""
  keys = [str(e) for e in result["eps"]]
  rows = [[name, r["kind"]] + [f"{r['accuracy'][k]:.4f}" if r.get("accuracy")
                               else f"({r['cumulative'][k]:.4f})" for k in keys]
          for name, r in result["attacks"].items()]
  rows.append(["**worst case**", "all"] + [f"**{result['worst_case']['accuracy'][k]:.4f}**"
                                           for k in keys])
  lines = [f"Clean accuracy {result['clean_accuracy']:.4f} on {result['num_examples']} examples"
           + (" (each attack on the points still robust)" if result.get("only_robust") else ""),
           "", tables.markdown_table(["attack", "kind"] + [f"eps {float(k):.4g}" for k in keys],
                                     rows)]
  if result.get("only_robust"):
    lines.append("")
    lines.append("Values in parentheses: worst case after that attack (it ran only on the points "
                 "every earlier attack failed on).")
  for s in result.get("skipped", []):
    lines.append(f"- skipped {s['name']}: {s['reason']}")
  if result.get("checks"):
    lines += ["", "Gradient-masking checks:", ""]
    for c in result["checks"]:
      lines.append(f"- [{'pass' if c['passed'] else 'FAIL'}] {c['name']}: {c['detail']}")
  return "\n".join(lines)


def format_csv(result: dict[str, Any]) -> str:
  """One row per (attack, eps): own accuracy (empty when undefined), cumulative, points attacked."""
  buf = io.StringIO()
  w = csv.writer(buf, lineterminator="\n")
  w.writerow(["attack", "kind", "eps", "accuracy", "cumulative_accuracy", "attacked"])
  for k in map(str, result["eps"]):
    w.writerow(["clean", "", 0.0, result["clean_accuracy"], result["clean_accuracy"],
                result["num_examples"]])
    for name, r in result["attacks"].items():
      own = r.get("accuracy", {}).get(k, "")
      w.writerow([name, r["kind"], k, own, r["cumulative"][k], r["attacked"][k]])
    acc = result["worst_case"]["accuracy"][k]
    w.writerow(["worst case", "", k, acc, acc, result["num_examples"]])
  return buf.getvalue()


def plot(result: dict[str, Any], path: str, title: str = "") -> None:
  """Robust accuracy vs eps (PNG): each attack (its own accuracy, or its cumulative worst case
  under only_robust) and the worst case, from the clean accuracy at eps 0."""
  plt = pyplot()
  eps = [0.0] + result["eps"]
  fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
  for name, r in result["attacks"].items():
    values = r.get("accuracy") or r["cumulative"]
    label = name if "accuracy" in r else f"{name} (cumulative)"
    ax.plot(eps, [result["clean_accuracy"]] + [values[str(e)] for e in result["eps"]],
            marker="o", ms=3, label=label)
  ax.plot(eps, [result["clean_accuracy"]] + [result["worst_case"]["accuracy"][str(e)]
                                            for e in result["eps"]],
          "k--", marker="s", ms=3, label="worst case")
  ax.set_xlabel("eps")
  ax.set_ylabel("robust accuracy")
  ax.set_ylim(0, 1)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=7)
  ax.set_title(title or f"{result['num_examples']} examples", fontsize=9)
  save_figure(fig, path)


def describe(result: dict[str, Any]) -> str:
  """What was evaluated, for report titles: a uat_jax run's method, model, dataset, step and
  preset, or, for any other model (run_suite from Python), its examples, eps and attacks."""
  if result.get("model"):
    return (f"{result.get('method', '')} {result['model']} on {result.get('dataset', '')}, "
            f"step {result.get('checkpoint_step', '?')}, preset {result.get('preset') or '-'}")
  eps = ", ".join(f"{e:.4g}" for e in result["eps"])
  return (f"a model evaluated from Python: {result['num_examples']} examples, eps {eps}, "
          f"attacks {', '.join(result['attacks']) or 'none'}")


def write_reports(result: dict[str, Any], out_dir: str) -> None:
  """results.json, results.csv, results.md, masking_checks.md, accuracy_vs_eps.png (atomic);
  `result` is SuiteResult.to_json()."""
  if sharding.is_chief():
    os.makedirs(out_dir, exist_ok=True)
  title = describe(result)
  write_json(os.path.join(out_dir, "results.json"), result)
  write_atomic(os.path.join(out_dir, "results.csv"), format_csv(result))
  write_atomic(os.path.join(out_dir, "results.md"), f"# {title}\n\n{format_table(result)}\n")
  checks = result.get("checks", [])
  failed = [c for c in checks if not c["passed"]]
  report = [f"# Gradient-masking checks: {title}", "",
            f"{len(checks) - len(failed)} of {len(checks)} passed." + (
                " Failures mean the numbers above may overestimate robustness: rerun with "
                "stronger attacks (presets strong, adaptive)." if failed else ""), ""]
  report += [f"- [{'pass' if c['passed'] else 'FAIL'}] {c['name']}: {c['detail']}"
             for c in checks]
  write_atomic(os.path.join(out_dir, "masking_checks.md"), "\n".join(report) + "\n")
  plot(result, os.path.join(out_dir, "accuracy_vs_eps.png"), title)
