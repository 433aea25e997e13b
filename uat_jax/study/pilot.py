"""The pilot rule of docs/study_plan.md ("Regime"): which training regime shows robust
overfitting, from the pilot runs' validation curves (launch/study_pilot.sh)."""

from __future__ import annotations

import math
import os
from typing import Any, Optional

from uat_jax import config as config_lib
from uat_jax import files, tables
from uat_jax.errors import UatError

PILOT_CANDIDATES = ("R1", "R2")
PILOT_DROP = 0.01  # validation PGD accuracy: best after the first decay minus the last
PILOT_GAP = 0.05  # train/accuracy_adv minus validation PGD accuracy at the end


def pilot_curves(workdir: str) -> dict[str, list]:
  """{"val": [[step, eval/pgd_accuracy]], "train": [[step, train/accuracy_adv]]} of a run."""
  curves = files.read_curves(os.path.join(workdir, "metrics.jsonl"),
                             ("eval/pgd_accuracy", "train/accuracy_adv"))
  return {"val": curves.get("eval/pgd_accuracy", []),
          "train": curves.get("train/accuracy_adv", [])}


def pilot_choice(pilot_root: str) -> dict[str, Any]:
  """The plan's rule over the pilot's finished runs: per candidate its drop (best validation PGD
  accuracy after the first learning-rate decay minus the last) and end gap (train robust minus
  validation PGD accuracy at the end), whether robust overfitting shows (drop >= PILOT_DROP and
  gap >= PILOT_GAP), and the chosen candidate: the first where it shows, else R1."""
  out: dict[str, Any] = {"rule": f"drop >= {PILOT_DROP} and end gap >= {PILOT_GAP}",
                         "candidates": {}}
  for name in PILOT_CANDIDATES:
    w = os.path.join(pilot_root, name)
    if not os.path.exists(os.path.join(w, "metrics.jsonl")):
      raise UatError(f"no pilot run in {w}: run launch/study_pilot.sh first")
    config = config_lib.load_workdir_config(w)
    steps = math.ceil(config.num_epochs * config.data.train_size / config.batch_size)
    curves = pilot_curves(w)
    last_step = curves["val"][-1][0] if curves["val"] else 0
    if last_step != steps:
      raise UatError(f"the pilot run {w} has not finished (step {last_step} of {steps}): rerun "
                     "launch/study_pilot.sh, which resumes it")
    decay = min(config.optimizer.boundaries) * last_step
    after = [v for s, v in curves["val"] if s > decay]
    end_val, end_train = curves["val"][-1][1], curves["train"][-1][1]
    drop, gap = max(after) - end_val, end_train - end_val
    out["candidates"][name] = {
        "train_size": config.data.train_size, "epochs": config.num_epochs, "steps": last_step,
        "best_after_decay": max(after), "end_val": end_val, "end_train": end_train,
        "drop": drop, "gap": gap, "overfits": bool(drop >= PILOT_DROP and gap >= PILOT_GAP),
        "curves": curves}
  showing = [n for n, c in out["candidates"].items() if c["overfits"]]
  out["chosen"] = showing[0] if showing else PILOT_CANDIDATES[0]
  out["overfitting_observed"] = bool(showing)
  return out


def write_pilot_choice(pilot_root: str, out: Optional[str] = None) -> dict[str, Any]:
  """pilot_choice, written to `out` (default PILOT_ROOT/choice.json) and printed as a table."""
  choice = pilot_choice(pilot_root)
  files.write_json(out or os.path.join(pilot_root, "choice.json"), choice)
  print(tables.markdown_table(
      ["candidate", "train_size", "epochs", "best val PGD after decay", "end val", "end train",
       "drop", "gap", "overfits"],
      [[name, c["train_size"], f"{c['epochs']:g}", f"{c['best_after_decay']:.3f}",
        f"{c['end_val']:.3f}", f"{c['end_train']:.3f}", f"{c['drop']:.3f}", f"{c['gap']:.3f}",
        c["overfits"]] for name, c in choice["candidates"].items()]))
  print(f"chosen: {choice['chosen']} (robust overfitting observed: "
        f"{choice['overfitting_observed']})")
  return choice
