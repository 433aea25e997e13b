"""Collecting the small results the report needs from a study's workdirs into OUT/data/:
per run its training curves, its best and last validation numbers, per evaluation output the
accuracies and the per-example masks (clean, PGD-20 and worst case) that the paired tests need,
and per Jacobian run the per-example norms."""

from __future__ import annotations

import glob
import os
from typing import Any, Optional

from uat_jax import files, jacobian, provenance
from uat_jax.errors import UatError
from uat_jax.report.view import WEAK
from uat_jax.study import spec

CURVES = ("eval/pgd_accuracy", "eval/clean_accuracy", "eval/mean_entropy", "train/accuracy_adv",
          "train/accuracy_clean", "train/learning_rate")


def compact_eval(result: dict[str, Any]) -> dict[str, Any]:
  """What the report needs of one results.json: accuracies per attack, the worst case, the
  masking checks and the clean, PGD-20 and worst-case masks."""
  if ":" not in result["clean_mask"]:
    raise UatError("a results.json of uat_jax 0.1.0 (unpacked masks): move its eval/<output> "
                   "folder aside and rerun the study, which evaluates it again")
  masks: dict[str, Any] = {"clean": result["clean_mask"],
                           "worst": dict(result["worst_case"]["mask"])}
  if WEAK in result["attacks"]:
    masks[WEAK] = dict(result["attacks"][WEAK]["robust_mask"])
  return {
      "checkpoint": result.get("checkpoint"), "checkpoint_step": result.get("checkpoint_step"),
      "num_examples": result["num_examples"], "eps": result["eps"], "preset": result["preset"],
      "clean_accuracy": result["clean_accuracy"], "only_robust": result["only_robust"],
      "attacks": {name: {"accuracy": a.get("accuracy"), "cumulative": a["cumulative"]}
                  for name, a in result["attacks"].items()},
      "worst_case": result["worst_case"]["accuracy"],
      "checks": [{"name": c["name"], "passed": c["passed"]} for c in result.get("checks", [])],
      "masks": masks, **({"provenance": result["provenance"]} if "provenance" in result else {})}


def _jacobian(workdir: str, matched: str = "") -> Optional[dict[str, Any]]:
  """A run's Jacobian result (spec.jacobian_dir) as the report keeps it: its info and the
  per-example norms on clean points (5 significant digits), or None when it has none."""
  out_dir = spec.jacobian_dir(workdir, matched)
  if not os.path.exists(os.path.join(out_dir, "norms.npz")):
    return None
  info = files.read_json(os.path.join(out_dir, "summary.json"))
  info.pop("summary", None)  # the per-example norms replace it; "provenance" is kept
  norms = jacobian.load_norms(out_dir).get("clean")
  if norms is None:
    raise UatError(f"{out_dir} holds Jacobian norms in the layout of uat_jax 0.1.0: move the "
                   "folder aside and rerun the study, which computes them again")
  return {**info, "norms": {q: [float(f"{v:.5g}") for v in a] for q, a in norms.items()}}


def collect(study, root: str, data_dir: str) -> dict[str, int]:
  """Copies what the report needs from ROOT into DATA_DIR (small JSON files, replacing what an
  earlier collection left there), for every run of the study that has results; returns
  {"found": n, "missing": m} pieces."""
  sweep_path = os.path.join(root, "sweep.json")
  if not os.path.exists(sweep_path):
    raise UatError(f"no sweep.json in {root}: run `python -m uat_jax.study` (or "
                   "launch/reproduce.sh) first")
  chosen = files.read_json(sweep_path)
  count = {"found": 0, "missing": 0}
  written: dict[str, dict[str, Any]] = {}
  for run in spec.final_runs(study, chosen) + spec.ablation_runs(study, chosen):
    w = spec.run_dir(root, run)
    out: dict[str, Any] = {"name": run.name, "method": run.method, "seed": run.seed,
                           "role": run.role, "variant": run.variant,
                           "dataset": run.config.data.name, "train_eps": run.config.attack.eps,
                           "best_metric": run.config.best_checkpoint.metric,
                           "boundaries": list(run.config.optimizer.boundaries), "evals": {}}
    done = spec.trained_marker(w)
    if os.path.exists(done):
      out["train"] = {k: v for k, v in files.read_json(done).items() if k != "workdir"}
      out["curves"] = files.read_curves(os.path.join(w, "metrics.jsonl"), CURVES)
    count["found" if "train" in out else "missing"] += 1
    outputs = study.evals if run.role == "final" else study.ablation_evals
    for output in [o for o in outputs if o in run.config.evals]:
      path = spec.results_marker(w, output)
      if os.path.exists(path):
        out["evals"][output] = compact_eval(files.read_json(path))
      count["found" if output in out["evals"] else "missing"] += 1
    for matched in [""] + list(study.jacobian.methods):
      found = _jacobian(w, matched)
      if found is not None:
        out[f"jacobian_T_{matched}" if matched else "jacobian"] = found
      elif not matched and run.role == "final" and run.method in study.jacobian.methods:
        count["missing"] += 1
    written[run.name] = out
  for old in glob.glob(os.path.join(data_dir, "runs", "*.json")):  # from an earlier collection
    os.remove(old)
  for name, out in written.items():
    files.write_json(os.path.join(data_dir, "runs", f"{name}.json"), out, indent=1)
  files.write_json(os.path.join(data_dir, "sweep.json"), chosen, indent=1)
  files.write_json(os.path.join(data_dir, "study.json"),
                   {**study.to_dict(), "provenance": provenance.record()}, indent=1)
  return count
