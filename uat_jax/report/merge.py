"""Adding the pieces of runs trained again to committed study data (docs/study_plan.md,
amendment 8 and v3.3): a run trained again is admitted only if every logged value of its
training curves equals the committed run's, step for step; then the evaluation outputs and
Jacobians the committed run lacks are added, and nothing it has is replaced. Outputs the study
config has added since the data were collected join the committed study.json; an output whose
specification changed is refused."""

from __future__ import annotations

import glob
import os
from typing import Any, Optional

from uat_jax import files
from uat_jax.errors import UatError


def first_difference(new: dict[str, Any], old: dict[str, Any]) -> Optional[str]:
  """Where the training curves of a run trained again first differ from the committed run's
  (every curve the committed run has), or None when they are equal."""
  for key, curve in sorted(old.get("curves", {}).items()):
    mine = new.get("curves", {}).get(key)
    if mine is None:
      return f"{key} is missing"
    for (step, value), (new_step, new_value) in zip(curve, mine):
      if (step, value) != (new_step, new_value):
        return f"{key} at step {step}: {new_value!r} instead of {value!r}"
    if len(curve) != len(mine):
      return f"{key} has {len(mine)} values instead of {len(curve)}"
  return None


def merge_study(new: dict[str, Any], old: dict[str, Any]) -> list[str]:
  """Adds to `old` (the committed study.json) the outputs of `new` it lacks, and its settings
  that `old` does not have at all; returns what it added ("output NAME", "setting NAME"). An
  output in both must be specified alike."""
  settings = [key for key in new if key not in old and key != "provenance"]
  old.update({key: new[key] for key in settings})
  added = [f"setting {key}" for key in settings]
  for section in ("evals", "ablation_evals"):
    for name, spec in new.get(section, {}).items():
      have = old.setdefault(section, {}).get(name)
      if have is None:
        old[section][name] = spec
        added.append(f"output {name}")
      elif {k: v for k, v in spec.items() if k in have} != have:
        raise UatError(f"the study's output {name} is specified differently from the committed "
                       f"data's: name the changed output anew in the study config")
  return added


def merge(collected_dir: str, data_dir: str) -> dict[str, list[str]]:
  """Merges a fresh collection (collected_dir, as report.collect writes it) into the committed
  data (data_dir). Returns {"admitted": [...], "refused": [...], "added": [...]}: runs whose new
  pieces were added, runs refused with the reason, and the pieces added."""
  study_path = os.path.join(data_dir, "study.json")
  study = files.read_json(study_path)
  out: dict[str, list[str]] = {"admitted": [], "refused": [], "added": []}
  out["added"] += [f"study {x}" for x in
                   merge_study(files.read_json(os.path.join(collected_dir, "study.json")), study)]
  for path in sorted(glob.glob(os.path.join(collected_dir, "runs", "*.json"))):
    new = files.read_json(path)
    committed_path = os.path.join(data_dir, "runs", os.path.basename(path))
    if "train" not in new or not os.path.exists(committed_path):
      continue  # not trained yet, or a run the committed data do not have
    old = files.read_json(committed_path)
    pieces = [k for k in new["evals"] if k not in old["evals"]]
    pieces += [k for k in new if k.startswith("jacobian") and k not in old]
    if not pieces:
      continue
    difference = first_difference(new, old)
    if difference is not None:
      out["refused"].append(f"{new['name']}: its training does not repeat the committed run "
                            f"({difference})")
      continue
    for k in pieces:
      if k in new["evals"]:
        old["evals"][k] = new["evals"][k]
      else:
        old[k] = new[k]
    files.write_json(committed_path, old, indent=1)
    out["admitted"].append(new["name"])
    out["added"] += [f"{new['name']} {k}" for k in pieces]
  files.write_json(study_path, study, indent=1)
  return out
