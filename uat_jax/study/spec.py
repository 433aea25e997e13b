"""The study's specification, pure: which training runs a study config asks for, their configs
(each with the study's evaluation outputs as evaluator instances, `config.evals.<output>`), their
workdirs and the files that mark a finished piece. Reads nothing but the study config and the
recipes; writes nothing. The scheduler (uat_jax.study.scheduler) runs what this describes, and
the report (uat_jax.report) collects what it produced."""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Optional

import ml_collections

from uat_jax import config as config_lib
from uat_jax.errors import UatError


@dataclasses.dataclass
class Run:
  """One training run of the study: its workdir name under ROOT/runs, method, seed, role
  ("final" or "ablation"; a sweep run is the final run of its value), the ablation variant
  and the training config."""
  name: str
  method: str
  seed: int
  role: str
  variant: str
  config: ml_collections.ConfigDict


def tag(value) -> str:
  """A swept value as it appears in run names and sweep.json ("0.3", "1")."""
  return f"{value:g}" if isinstance(value, float) else str(value)


def output_eps(spec, method: str) -> tuple[float, ...]:
  """The eps at which one evaluation output of a study config (`evals`, `ablation_evals`) runs
  for a method: its `eps_by_method[method]` if given, else its `eps`; empty: the output is not
  run for it."""
  by_method = spec.get("eps_by_method") or {}
  return tuple(float(e) for e in by_method.get(method, spec["eps"]))


def output_evaluator(spec, method: str) -> ml_collections.ConfigDict:
  """One evaluation output of the study as a suite evaluator instance of a run's config: the
  output's preset, selected and added attacks, eps and examples, written to W/eval/<output>/
  on the test split; it runs only on request (every_steps 0)."""
  e = config_lib.evaluator(
      "suite", preset=spec["preset"], eps=output_eps(spec, method),
      num_examples=spec["num_examples"], checks=spec["checks"])
  if "batch_size" in spec:
    e.batch_size = spec["batch_size"]
  e.only_robust = spec.get("only_robust")
  e.select = spec.get("select", "")
  for name, entry in (spec.get("attacks") or {}).items():  # after the preset's, in name order
    e.attacks[name] = ml_collections.ConfigDict(dict(entry))
  return e


def _set(config, values: dict[str, Any], what: str) -> None:
  """ConfigDict.update with one line naming a field the config does not have."""
  try:
    config.update(values)
  except KeyError as e:
    raise UatError(f"the study sets {what} {values}, which names no config field ({e})") from None


def make_run(study, method: str, seed: int, value=None, variant: str = "",
             role: str = "final") -> Run:
  """The run of `method` at `seed` with the swept parameter at `value` (None: not swept) and an
  ablation variant of study.ablation.variants: study.config:method, study.overrides, the
  method's overrides, the value, the variant and the seed (a method of
  study.method_variants, {name: {"method", "overrides"}}, is its recipe method with its
  overrides, e.g. AT with weight averaging); then the study's evaluation outputs
  of its role as evaluator instances (`evals` for final runs, `ablation_evals` for ablation
  runs; an output with `seeds` only for those seeds)."""
  variants = study.get("method_variants") or {}
  c = config_lib.from_file(study.config, variants[method].method if method in variants else method)
  name = method
  outputs = study.evals if role == "final" else study.ablation_evals
  c.lock()  # a study sets fields the config has, never new ones
  _set(c, study.overrides.to_dict(), "overrides")
  if method in variants:
    _set(c, variants[method].overrides.to_dict(), f"method_variants.{method}")
  if method in study.method_overrides:
    _set(c, study.method_overrides[method].to_dict(), f"method_overrides.{method}")
  if value is not None:
    key = study.sweep[method][0]
    c.update_from_flattened_dict({key: value})
    name += f"_{key.split('.')[-1]}{tag(value)}"
  if variant:
    _set(c, study.ablation.variants[variant].to_dict(), f"ablation.variants.{variant}")
    name += f"_{variant}"
  c.seed = seed
  with c.unlocked():
    for output, spec in outputs.items():
      if output_eps(spec, method) and seed in (spec.get("seeds") or (seed,)):
        c.evals[output] = output_evaluator(spec, method)
        c.evals[output].output = output
  return Run(f"{name}_s{seed}", method, seed, role, variant, c)


def run_dir(root: str, run: Run) -> str:
  return os.path.join(root, "runs", run.name)


def swept(study, method: str) -> bool:
  return method in study.sweep and len(study.sweep[method][1]) > 1


def sweep_runs(study) -> list[Run]:
  """Every value of every swept method at its first seed; none when the study takes its choice
  from a committed sweep (`sweep_from`)."""
  if study.get("sweep_from"):
    return []
  return [make_run(study, m, study.seeds[m][0], v) for m in study.methods if swept(study, m)
          for v in study.sweep[m][1]]


def _value(chosen: dict[str, Any], method: str):
  return chosen[method]["chosen"] if method in chosen else None


def final_runs(study, chosen: dict[str, Any]) -> list[Run]:
  """Every method's seeds with the sweep's choice (the baseline's and then the adversarially
  trained methods first: the primary outcome's runs)."""
  order = sorted(study.methods, key=lambda m: (m != study.baseline, not m.startswith("at")))
  return [make_run(study, m, seed, _value(chosen, m)) for m in order for seed in study.seeds[m]]


def ablation_runs(study, chosen: dict[str, Any]) -> list[Run]:
  a = study.ablation
  return [make_run(study, a.method, seed, _value(chosen, a.method), variant, "ablation")
          for variant in a.variants for seed in a.seeds]


def surrogate_run(runs: list[Run], run: Run) -> Optional[Run]:
  """The transfer attacks' surrogate: the next seed (cyclically) of the same method and
  variant; None with one seed."""
  same = [r for r in runs if (r.method, r.variant) == (run.method, run.variant)]
  if len(same) < 2:
    return None
  return same[(same.index(run) + 1) % len(same)]


def trained_marker(workdir: str) -> str:
  """W/train_result.json: written when a run's training finished (the piece is then done)."""
  return os.path.join(workdir, "train_result.json")


def results_marker(workdir: str, output: str) -> str:
  """W/eval/<output>/results.json: an evaluation output's results (the piece is then done)."""
  return os.path.join(workdir, "eval", output, "results.json")


def jacobian_dir(workdir: str, matched: str = "") -> str:
  """W/eval/jacobian/ (the run's Jacobian norms), or W/eval/jacobian_T_<matched>/ (the
  temperature control of the baseline matched to method `matched`)."""
  return os.path.join(workdir, "eval", f"jacobian_T_{matched}" if matched else "jacobian")
