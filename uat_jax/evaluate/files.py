"""What an evaluation leaves on disk: atomic writes, the resumable per-(attack, eps) results, and
the reports (results.json / .csv / .md, masking_checks.md, accuracy_vs_eps.png)."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
from typing import Any, Callable, Optional, Union

import numpy as np
from absl import logging

from uat_jax import sharding

# --------------------------------------------------------------------------------------------
# Resumable per-(attack, eps) results.
# --------------------------------------------------------------------------------------------

def write_atomic(path: str, payload: Union[str, bytes]) -> None:
  """Writes a file under a temporary name, then renames it: readers never see half a file. On
  several hosts only process 0 writes (the workdir is on a filesystem they share)."""
  if not sharding.is_chief():
    return
  tmp = f"{path}.tmp-{os.getpid()}"
  with open(tmp, "wb") as f:
    f.write(payload.encode() if isinstance(payload, str) else payload)
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, path)


def pyplot():
  """matplotlib.pyplot on the Agg backend: figures go to files, no display is needed."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  return plt


def save_figure(fig, path: str) -> None:
  """Lays out a matplotlib figure, writes it to `path` as PNG (atomically, creating the
  directory) and closes it."""
  buf = io.BytesIO()
  fig.tight_layout()
  fig.savefig(buf, format="png")
  pyplot().close(fig)
  if sharding.is_chief():
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  write_atomic(path, buf.getvalue())


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


def _cached(store: Optional[ResultStore], name: str, key: dict[str, Any],
            compute: Callable[[], np.ndarray]) -> np.ndarray:
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
  head = " | " + " | ".join(f"eps {float(k):.4g}" for k in keys) + " |"
  rule = "|---" * (len(keys) + 2) + "|"
  lines = [f"Clean accuracy {result['clean_accuracy']:.4f} on {result['num_examples']} examples"
           + (" (each attack on the points still robust)" if result.get("only_robust") else ""),
           "", "| attack | kind" + head, rule]
  for name, r in result["attacks"].items():
    own = r.get("accuracy")
    lines.append(f"| {name} | {r['kind']} | " + " | ".join(
        f"{own[k]:.4f}" if own else f"({r['cumulative'][k]:.4f})" for k in keys) + " |")
  lines.append("| **worst case** | all | " + " | ".join(
      f"**{result['worst_case']['accuracy'][k]:.4f}**" for k in keys) + " |")
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


def write_reports(result: dict[str, Any], out_dir: str) -> None:
  """results.json, results.csv, results.md, masking_checks.md, accuracy_vs_eps.png (atomic)."""
  if sharding.is_chief():
    os.makedirs(out_dir, exist_ok=True)
  title = (f"{result.get('method', '')} {result.get('model', '')} on {result.get('dataset', '')}"
           f", step {result.get('checkpoint_step', '?')}, preset {result.get('preset') or '-'}")
  write_atomic(os.path.join(out_dir, "results.json"), json.dumps(result, indent=2))
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
