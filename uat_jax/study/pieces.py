"""The study as pieces: every unit of work (train a run, evaluate an output of it, its Jacobian
norms, a temperature control) with its name, what marks it finished and what it needs first,
in the order it runs (docs/reproducing.md):

  1. train     the sweep runs, then every method's other seeds, then the ablation variants.
  2. evaluate  each final run's outputs of its best checkpoint (W/eval/<output>/, on the test
               split); transfer attacks use the same method's next seed as surrogate.
  3. jacobian  input-Jacobian norms of the best checkpoints, and the temperature-matched control.
  4. evaluate  the outputs of the last checkpoint, then the ablation runs.
  5. evaluate  the outputs marked `deferred` (what the primary outcome does not need).

Each piece calls what `python -m uat_jax.main` calls; a piece is skipped when its marker exists
(a training run's train_result.json, an evaluation's results.json, Jacobians' summary.json) and
resumes from its checkpoints or saved attacks otherwise.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import functools
import os
from typing import Callable

from uat_jax import evaluate, evaluators, files, provenance, train
from uat_jax.study import controls, spec, sweep


@dataclasses.dataclass
class Piece:
  """One unit of the pipeline: its name (also its log file's), whether it is finished, what it
  needs finished first (other pieces' names) and the work."""
  name: str
  done: Callable[[], bool]
  needs: tuple[str, ...]
  work: Callable[[], None]


def train_run(run: spec.Run, workdir: str) -> None:
  """Trains (or resumes from its checkpoints), then writes the marker with the result."""
  result = train.train_and_evaluate(run.config, workdir,
                                    evaluators=evaluators.for_training(run.config))
  files.write_json(spec.trained_marker(workdir), {
      **result, "provenance": provenance.record(seed=run.seed, method=run.method)})


def transfers(run: spec.Run, output: str) -> bool:
  """Whether the run's evaluation output runs a transfer attack, i.e. needs the surrogate's run
  (the `strong` preset does not: its pieces neither wait for nor train the next seed)."""
  return any(e["attack"] == "transfer" for e in evaluate.suite_entries(run.config.evals[output]))


def evaluate_output(run: spec.Run, output: str, checkpoint: str, workdir: str,
                    surrogate: str) -> None:
  """The run's evaluator instance `output` on its `checkpoint` (best or last; the surrogate's
  checkpoint of the same kind), the transfer attacks' surrogate set to `surrogate` (a workdir,
  or "" without one)."""
  with run.config.unlocked():
    run.config.evals.checkpoint = checkpoint
    run.config.evals[output].surrogate_workdir = surrogate
  evaluators.evaluate_workdir(run.config, workdir, names=(output,))


def _marker(path: str) -> Callable[[], bool]:
  return functools.partial(os.path.exists, path)


def pieces(study, root: str) -> list[Piece]:
  """Every piece of the study in the order it runs. Final runs of swept methods need the sweep's
  choice: until every sweep run is finished they appear once, as "choose", pending."""
  out: list[Piece] = []

  def add_training(r):
    w = spec.run_dir(root, r)
    out.append(Piece(f"train {r.name}", _marker(spec.trained_marker(w)), (),
                     functools.partial(train_run, r, w)))

  swept = spec.sweep_runs(study)
  for r in swept:
    add_training(r)
  if not all(os.path.exists(spec.trained_marker(spec.run_dir(root, r))) for r in swept):
    out.append(Piece("choose", lambda: False, tuple(f"train {r.name}" for r in swept),
                     lambda: None))
    return out
  chosen = sweep.choose(study, root)
  finals, ablation = spec.final_runs(study, chosen), spec.ablation_runs(study, chosen)
  names = {p.name for p in out}
  for r in finals + ablation:
    if f"train {r.name}" not in names:
      add_training(r)

  def evaluations(runs, specs, checkpoint, deferred=False):
    for output in [o for o in specs if specs[o]["checkpoint"] == checkpoint
                   and bool(specs[o].get("deferred")) == deferred]:
      for r in [r for r in runs if output in r.config.evals]:
        surrogate = spec.surrogate_run(runs, r) if transfers(r, output) else None
        w = spec.run_dir(root, r)
        out.append(Piece(
            f"evaluate {r.name} {output}", _marker(spec.results_marker(w, output)),
            (f"train {r.name}",) + ((f"train {surrogate.name}",) if surrogate else ()),
            functools.partial(evaluate_output, r, output, checkpoint, w,
                              spec.run_dir(root, surrogate) if surrogate else "")))

  evaluations(finals, study.evals, "best")
  j = study.jacobian
  for r in [r for r in finals if r.method in j.methods]:
    w = spec.run_dir(root, r)
    out.append(Piece(f"jacobian {r.name}",
                     _marker(os.path.join(spec.jacobian_dir(w), "summary.json")),
                     (f"train {r.name}",),
                     functools.partial(controls.best_checkpoint_norms, study, root, r)))
  for base in [r for r in finals if r.method == study.baseline and r.method in j.methods]:
    for other in [r for r in finals if r.method in j.methods and r.method != study.baseline
                  and r.seed == base.seed]:
      w = spec.run_dir(root, base)
      out.append(Piece(
          f"jacobian {base.name} T-matched to {other.name}",
          _marker(os.path.join(spec.jacobian_dir(w, other.method), "summary.json")),
          (f"train {base.name}", f"train {other.name}"),
          functools.partial(controls.temperature_control, study, root, base, other)))
  evaluations(finals, study.evals, "last")
  evaluations(ablation, study.ablation_evals, "best")
  for checkpoint in ("best", "last"):
    evaluations(finals, study.evals, checkpoint, deferred=True)
  evaluations(ablation, study.ablation_evals, "best", deferred=True)
  return out


def select(listing: list[Piece], only: str) -> list[Piece]:
  """The pieces of `listing` whose names match one of the comma-separated shell patterns of
  `only` (e.g. "evaluate *_on_clean_s? *,train at_s0"), with every piece they need, in listing
  order; `only` empty: the whole listing. "choose" (the sweep still to finish) is kept: the
  pieces after it are not listed yet."""
  patterns = [p.strip() for p in only.split(",") if p.strip()]
  if not patterns:
    return listing
  by_name = {p.name: p for p in listing}
  keep = {p.name for p in listing if p.name == "choose"
          or any(fnmatch.fnmatchcase(p.name, pat) for pat in patterns)}
  todo = list(keep)
  while todo:
    for need in by_name[todo.pop()].needs:
      if need in by_name and need not in keep:
        keep.add(need)
        todo.append(need)
  return [p for p in listing if p.name in keep]
