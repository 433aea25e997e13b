r"""The paper's study as one resumable pipeline (docs/study_plan.md; launch/reproduce.sh).

  python -m uat_jax.study --study=configs/fashion_mnist_study.py[:quick] --root=workdirs/study

Stages, over workdirs ROOT/runs/<name> (the study config says what each one runs):
  1. sweep     beta (EntM) / alpha (LS) per regularized method at the method's first seed, with
               the final schedule; scored by the best logged value of the run's
               best_checkpoint metric on the validation split (ties: the smaller value). The
               choice goes to ROOT/sweep.json; the run of the chosen value is that seed's final
               run. The test split is not read. A study with `sweep_from` (the sweep.json of
               a finished sweep, e.g. the committed one) takes that choice and runs no sweep.
  2. train     every method's other seeds, then the ablation variants.
  3. evaluate  each final run with the study's outputs of its best checkpoint (W/eval/<output>/,
               on the test split); transfer attacks use the same method's next seed as surrogate.
               An output's eps may differ per method (`eps_by_method`; none: not run).
  4. jacobian  input-Jacobian norms of the best checkpoints (W/eval/jacobian/), and the
               temperature-matched control: AT's logits divided by the T at which AT's mean
               predictive entropy on validation images equals the regularized method's.
  5. evaluate  the outputs of the last checkpoint, then the ablation runs.
  6. evaluate  the outputs marked `deferred` (of the final runs, then of the ablation runs):
               what the primary outcome does not need runs last.
Each step calls the functions `python -m uat_jax.main` calls. Rerunning skips finished pieces (a
training run with its train_result.json, an evaluation with its results.json, Jacobians with
their summary.json) and resumes unfinished ones from their checkpoints / saved attacks; progress
and the time so far are logged before every piece. Several processes started with the same
command share the pieces (`schedule`: each runs a piece under its claim in ROOT/claims/).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import fnmatch
import functools
import io
import logging as pylogging
import math
import os
import time
from typing import Any, Callable, Optional

import jax
import ml_collections
import numpy as np
from absl import flags, logging
from ml_collections import config_flags

from uat_jax import (classifier, cli, config_lib, data, estimate, evaluators, files, jacobian, lock,
                     losses, report, train)
from uat_jax.errors import Preempted, UatError


def _merge(node, values: dict[str, Any], prefix: str = "") -> None:
  """Sets values (nested dicts shaped like the config, or dotted keys) into a config."""
  for key, value in values.items():
    head, _, rest = key.partition(".")
    if rest:
      value, key = {rest: value}, head
    if key not in node:
      raise UatError(f"the study sets {prefix}{key}, which is not a config field")
    if isinstance(value, dict):
      _merge(node[key], value, f"{prefix}{key}.")
    else:
      node[key] = value


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


def _tag(value) -> str:
  return f"{value:g}" if isinstance(value, float) else str(value)


def make_run(study, method: str, seed: int, value=None, variant: str = "",
             role: str = "final") -> Run:
  """The run of `method` at `seed` with the swept parameter at `value` (None: not swept) and an
  ablation variant of study.ablation.variants: study.config:method, study.overrides, the
  method's overrides, the value, the variant and the seed."""
  c = config_lib.from_file(study.config, method)
  name = method
  with c.unlocked():
    _merge(c, study.overrides.to_dict())
    if method in study.method_overrides:
      _merge(c, study.method_overrides[method].to_dict())
    if value is not None:
      key = study.sweep[method][0]
      _merge(c, {key: value})
      name += f"_{key.split('.')[-1]}{_tag(value)}"
    if variant:
      _merge(c, study.ablation.variants[variant].to_dict())
      name += f"_{variant}"
    c.seed = seed
  return Run(f"{name}_s{seed}", method, seed, role, variant, c)


def run_dir(root: str, run: Run) -> str:
  return os.path.join(root, "runs", run.name)


def _swept(study, method: str) -> bool:
  return method in study.sweep and len(study.sweep[method][1]) > 1


def sweep_runs(study) -> list[Run]:
  """Every value of every swept method at its first seed; none when the study takes its choice
  from a committed sweep (`sweep_from`)."""
  if study.get("sweep_from"):
    return []
  return [make_run(study, m, study.seeds[m][0], v) for m in study.methods if _swept(study, m)
          for v in study.sweep[m][1]]


def pinned_choice(study) -> dict[str, Any]:
  """The choice of a finished sweep of this study, read from `study.sweep_from` (a sweep.json
  that `choose` wrote, e.g. committed under results/<dataset>/data/) and checked against the
  study's sweep: the same methods, parameters and values, the chosen value among them. Each
  method's entry gets "source": that path."""
  path = study.sweep_from
  fix = ("point sweep_from at the sweep.json of a finished sweep of this study, or set "
         "--study.sweep_from='' to run the sweep")
  if not os.path.exists(path):
    raise UatError(f"sweep_from={path!r} does not exist: {fix}")
  saved = files.read_json(path)
  out = {}
  for method in [m for m in study.methods if m in study.sweep]:
    key, values = study.sweep[method]
    entry = saved.get(method)
    if entry is None:
      raise UatError(f"sweep_from={path!r} has no choice for {method}: {fix}")
    expected = {_tag(v) for v in values} if _swept(study, method) else set()
    if (entry.get("key") != key or set(entry.get("values", {})) != expected
        or not any(_tag(v) == _tag(entry.get("chosen")) for v in values)):
      raise UatError(f"sweep_from={path!r} chose {entry.get('key')}={entry.get('chosen')} for "
                     f"{method} over {sorted(entry.get('values', {}))}, but the study sweeps "
                     f"{key} over {sorted(expected)}: {fix}")
    out[method] = {**entry, "source": path}
  return out


def best_logged(workdir: str, metric: str) -> float:
  """The best (highest) value of `metric` in a run's metrics.jsonl."""
  curve = files.read_curves(os.path.join(workdir, "metrics.jsonl"), (metric,)).get(metric)
  if not curve:
    raise UatError(f"{workdir} logged no {metric}: rerun the study, which resumes it")
  return max(v for _, v in curve)


def choose(study, root: str) -> dict[str, Any]:
  """The sweep's choices from its finished runs, written to ROOT/sweep.json: {method: {"key",
  "metric", "values": {value: best logged metric}, "chosen"}}; a method with one value is
  "not swept". With `study.sweep_from` the choice is that file's (`pinned_choice`) and no
  sweep run is needed."""
  if study.get("sweep_from"):
    out = pinned_choice(study)
    files.write_json(os.path.join(root, "sweep.json"), out)
    return out
  out = {}
  for method in study.methods:
    if method not in study.sweep:
      continue
    key, values = study.sweep[method]
    if not _swept(study, method):
      out[method] = {"key": key, "values": {}, "chosen": values[0], "metric": "not swept"}
      continue
    runs = [make_run(study, method, study.seeds[method][0], v) for v in values]
    metric = runs[0].config.best_checkpoint.metric
    scores = {_tag(v): best_logged(run_dir(root, r), metric) for v, r in zip(values, runs)}
    best = max(scores.values())
    chosen = min(v for v in values if scores[_tag(v)] == best)  # ties: the smaller value
    out[method] = {"key": key, "metric": metric, "values": scores, "chosen": chosen}
    logging.info("sweep %s: %s; chose %s=%s", method,
                 ", ".join(f"{v}: {score:.4f}" for v, score in scores.items()), key, chosen)
  files.write_json(os.path.join(root, "sweep.json"), out)
  return out


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


def trained_marker(workdir: str) -> str:
  """W/train_result.json: written when a run's training finished (the piece is then done)."""
  return os.path.join(workdir, "train_result.json")


def results_marker(workdir: str, output: str) -> str:
  """W/eval/<output>/results.json: an evaluation output's results (the piece is then done)."""
  return os.path.join(workdir, "eval", output, "results.json")


def _train(run: Run, workdir: str) -> None:
  """Trains (or resumes from its checkpoints), then writes the marker with the result. Whether
  to call it at all is the pipeline's decision (Piece.done, agreed on process 0)."""
  result = train.train_and_evaluate(run.config, workdir,
                                    evaluators=evaluators.for_training(run.config))
  files.write_json(trained_marker(workdir), result)


def surrogate_run(runs: list[Run], run: Run) -> Optional[Run]:
  """The transfer attacks' surrogate: the next seed (cyclically) of the same method and
  variant; None with one seed."""
  same = [r for r in runs if (r.method, r.variant) == (run.method, run.variant)]
  if len(same) < 2:
    return None
  return same[(same.index(run) + 1) % len(same)]


def evaluation_config(run: Run, spec, output: str, surrogate: str) -> ml_collections.ConfigDict:
  """The run's config with the suite set to one evaluation output of the study."""
  config = copy.deepcopy(run.config)
  config.unlock()
  s = config.evals.suite
  config.evals.on_evaluate = ("suite",)
  config.evals.checkpoint = spec["checkpoint"]
  config.evals.split = "test"
  s.output = output
  s.preset = spec["preset"]
  s.eps = report.output_eps(spec, run.method)
  s.num_examples = spec["num_examples"]
  s.batch_size = spec.get("batch_size", s.batch_size)
  s.only_robust = spec.get("only_robust")
  s.checks = spec["checks"]
  s.surrogate_workdir = surrogate
  for name, entry in spec.get("attacks", {}).items():  # after the preset's, by name order
    s.attacks[name] = ml_collections.ConfigDict(entry.to_dict())
  return config


def transfers(run: Run, spec, output: str) -> bool:
  """Whether the output runs a transfer attack, i.e. needs the surrogate's run (the `strong`
  preset does not: its pieces neither wait for nor train the next seed)."""
  entries = config_lib.suite_entries(evaluation_config(run, spec, output, ""))
  return any(e["attack"] == "transfer" for e in entries)


def _evaluate(run: Run, spec, output: str, workdir: str, surrogate: str) -> None:
  evaluators.evaluate_workdir(evaluation_config(run, spec, output, surrogate), workdir)


# --------------------------------------------------------------------------------------------
# Jacobians and the temperature-matched control.
# --------------------------------------------------------------------------------------------

def mean_entropy(logits: np.ndarray, temperature: float = 1.0) -> float:
  """Mean predictive entropy (nats) of softmax(logits / T)."""
  return float(np.mean(losses.entropy(jax.numpy.asarray(logits) / temperature)))


def matching_temperature(logits: np.ndarray, target: float, low: float = 1e-2,
                         high: float = 1e2, iters: int = 60) -> float:
  """The T at which the mean entropy of softmax(logits / T) equals `target` (bisection on
  log T: the entropy rises with T, from 0 towards log K)."""
  lo, hi = math.log(low), math.log(high)
  if not mean_entropy(logits, low) <= target <= mean_entropy(logits, high):
    raise UatError(f"no temperature in [{low}, {high}] gives mean entropy {target:.4f}")
  for _ in range(iters):
    mid = 0.5 * (lo + hi)
    if mean_entropy(logits, math.exp(mid)) < target:
      lo = mid
    else:
      hi = mid
  return math.exp(0.5 * (lo + hi))


def _scaled(logits_fn, temperature: float):
  return jax.tree_util.Partial(lambda f, t, x: f(x) / t, logits_fn, temperature)


def _norms(study, logits_fn, config) -> dict[str, np.ndarray]:
  j = study.jacobian
  x, y = data.images(config.data, "test", j.num_examples)
  out = jacobian.analyze(logits_fn, x, y, outputs=tuple(j.outputs), norms=tuple(j.norms),
                         power_iters=j.power_iters)
  return out["clean"]


def _save_norms(out_dir: str, norms: dict[str, np.ndarray], info: dict[str, Any]) -> None:
  os.makedirs(out_dir, exist_ok=True)
  buf = io.BytesIO()
  np.savez(buf, **norms)
  files.write_atomic(os.path.join(out_dir, "norms.npz"), buf.getvalue())
  files.write_json(os.path.join(out_dir, "summary.json"),
                   {**info, "mean": {k: float(v.mean()) for k, v in norms.items()}})


def jacobian_norms(study, root: str, run: Run) -> None:
  """Per-example Jacobian norms of the run's best checkpoint on the first test images
  (W/eval/jacobian/)."""
  w = run_dir(root, run)
  clf = classifier.load(w, "best", run.config)
  logging.info("Jacobian norms of %s (best checkpoint, step %d)", w, clf.step)
  _save_norms(os.path.join(w, "eval", "jacobian"), _norms(study, clf.logits_fn, run.config),
              {"checkpoint_step": clf.step, "method": run.method, "seed": run.seed})


def temperature_control(study, root: str, base: Run, other: Run) -> None:
  """The baseline run's logits divided by the T that matches `other`'s mean predictive entropy
  on the first validation images (same seed), and that model's Jacobian norms
  (W/eval/jacobian_T_<other's method>/ in the baseline's workdir)."""
  wb = run_dir(root, base)
  clf = classifier.load(wb, "best", base.config)
  target_clf = classifier.load(run_dir(root, other), "best", other.config)
  xv, _ = clf.validation_images(study.jacobian.temperature_examples)
  base_logits = np.asarray(clf.logits_fn(xv))
  target = mean_entropy(np.asarray(target_clf.logits_fn(xv)))
  t = matching_temperature(base_logits, target)
  logging.info("temperature control: %s / %.3f matches %s's mean entropy %.4f", wb, t,
               other.name, target)
  _save_norms(os.path.join(wb, "eval", f"jacobian_T_{other.method}"),
              _norms(study, _scaled(clf.logits_fn, t), base.config),
              {"checkpoint_step": clf.step, "method": base.method, "seed": base.seed,
               "temperature": t, "matched": other.method, "target_entropy": target,
               "entropy_before": mean_entropy(base_logits)})


# --------------------------------------------------------------------------------------------
# The pipeline.
# --------------------------------------------------------------------------------------------

def _compilation_cache(root: str) -> None:
  """JAX's persistent compilation cache under ROOT (unless the user set one): the study's
  models share shapes, so most evaluation and Jacobian programs compile once for all of them,
  and a rerun compiles nothing it compiled before."""
  if not jax.config.jax_compilation_cache_dir:
    jax.config.update("jax_compilation_cache_dir", os.path.abspath(os.path.join(root, "jax_cache")))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.1)


@dataclasses.dataclass
class Piece:
  """One unit of the pipeline: its name (also its log file's), whether it is finished, what it
  needs finished first (other pieces' names) and the work."""
  name: str
  done: Callable[[], bool]
  needs: tuple[str, ...]
  work: Callable[[], None]


def _agreed(value: bool) -> bool:
  """Process 0's answer on every process (skip and resume decisions read files, which hosts of
  a cached shared filesystem can see differently)."""
  if jax.process_count() == 1:
    return value
  from jax.experimental import multihost_utils
  return bool(multihost_utils.broadcast_one_to_all(np.asarray(value)))


def pieces(study, root: str) -> list[Piece]:
  """Every piece of the study in the order it runs. Final runs of swept methods need the sweep's
  choice: until every sweep run is finished they appear once, as "choose", pending."""
  out: list[Piece] = []
  trained = lambda r: functools.partial(os.path.exists, trained_marker(run_dir(root, r)))
  swept = sweep_runs(study)
  for r in swept:
    out.append(Piece(f"train {r.name}", trained(r), (), functools.partial(
        _train, r, run_dir(root, r))))
  if not all(trained(r)() for r in swept):
    out.append(Piece("choose", lambda: False, tuple(f"train {r.name}" for r in swept), lambda: None))
    return out
  chosen = choose(study, root)
  finals, ablation = final_runs(study, chosen), ablation_runs(study, chosen)
  names = {p.name for p in out}
  for r in finals + ablation:
    if f"train {r.name}" not in names:
      out.append(Piece(f"train {r.name}", trained(r), (), functools.partial(
          _train, r, run_dir(root, r))))

  def evaluations(runs, specs, checkpoint, deferred=False):
    for output in [o for o in specs if specs[o]["checkpoint"] == checkpoint
                   and bool(specs[o].get("deferred")) == deferred]:
      for r in [r for r in runs if report.output_eps(specs[output], r.method)]:
        surrogate = surrogate_run(runs, r) if transfers(r, specs[output], output) else None
        w = run_dir(root, r)
        out.append(Piece(
            f"evaluate {r.name} {output}",
            functools.partial(os.path.exists, results_marker(w, output)),
            (f"train {r.name}",) + ((f"train {surrogate.name}",) if surrogate else ()),
            functools.partial(_evaluate, r, specs[output], output, w,
                              run_dir(root, surrogate) if surrogate else "")))

  evaluations(finals, study.evals, "best")
  j = study.jacobian
  for r in [r for r in finals if r.method in j.methods]:
    out.append(Piece(f"jacobian {r.name}", functools.partial(
        os.path.exists, os.path.join(run_dir(root, r), "eval", "jacobian", "summary.json")),
        (f"train {r.name}",), functools.partial(jacobian_norms, study, root, r)))
  for base in [r for r in finals if r.method == study.baseline and r.method in j.methods]:
    for other in [r for r in finals if r.method in j.methods and r.method != study.baseline
                  and r.seed == base.seed]:
      out.append(Piece(
          f"jacobian {base.name} T-matched to {other.name}", functools.partial(
              os.path.exists, os.path.join(run_dir(root, base), "eval",
                                           f"jacobian_T_{other.method}", "summary.json")),
          (f"train {base.name}", f"train {other.name}"),
          functools.partial(temperature_control, study, root, base, other)))
  evaluations(finals, study.evals, "last")
  evaluations(ablation, study.ablation_evals, "best")
  for checkpoint in ("best", "last"):
    evaluations(finals, study.evals, checkpoint, deferred=True)
  evaluations(ablation, study.ablation_evals, "best", deferred=True)
  return out


@contextlib.contextmanager
def _piece_log(path: str):
  """Everything logged meanwhile also goes to `path`."""
  os.makedirs(os.path.dirname(path), exist_ok=True)
  handler = pylogging.FileHandler(path)
  handler.setFormatter(pylogging.Formatter("%(asctime)s %(levelname)s %(message)s"))
  logger = pylogging.getLogger()
  logger.addHandler(handler)
  try:
    yield
  finally:
    logger.removeHandler(handler)
    handler.close()


def parse_shard(shard: str) -> tuple[int, int]:
  """"i/n" -> (i, n) with 0 <= i < n; "" -> (0, 1)."""
  if not shard:
    return 0, 1
  try:
    i, n = (int(v) for v in shard.split("/"))
  except ValueError:
    i, n = -1, 0
  if not 0 <= i < n:
    raise UatError(f"--shard={shard!r}: write i/n with 0 <= i < n, e.g. --shard=0/4 "
                   "(a SLURM array job passes --shard=$SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT)")
  return i, n


POLL_S = 30.0  # how often a process with nothing to start looks again at the pieces others run


def claim_dir(root: str, name: str) -> str:
  """ROOT/claims/<piece>: its lock says which process runs the piece now."""
  return os.path.join(root, "claims", name.replace(" ", "_"))


def _claim(root: str, name: str) -> Optional[contextlib.ExitStack]:
  """The piece's claim, held until the returned stack closes; None if another process holds it
  (process 0 decides for every process)."""
  stack = contextlib.ExitStack()
  try:
    stack.enter_context(lock.lock(claim_dir(root, name), f"study piece {name}"))
    taken = True
  except lock.InUse:
    taken = False
  if _agreed(taken):
    return stack
  stack.close()
  return None


def _holders(root: str, names) -> dict[str, str]:
  """{piece: holder} for the pieces among `names` that another process runs now. Always empty
  in a multi-host job (its hosts must take the same decisions; it does not wait for others)."""
  if jax.process_count() > 1:
    return {}
  found = {n: lock.holder(claim_dir(root, n)) for n in names}
  return {n: h for n, h in found.items() if h}


def schedule(list_pieces: Callable[[], list[Piece]], root: str, index: int = 0, count: int = 1,
             poll_s: float = POLL_S) -> dict[str, str]:
  """Runs the pieces of shard `index` of `count` (piece k of the listing belongs to shard k mod
  count), one at a time, in listing order, listing them again after each (a finished sweep
  unlocks the final runs). Several processes can run the same study at once, on one machine
  or on hosts sharing ROOT: each piece is run under its claim (a lock in ROOT/claims/, released
  however the process ends), a piece another process holds is left to it, a piece whose needs
  another process is still running waits for them, a piece whose directory another process
  has locked (two evaluations of one run) waits for it, and a process with nothing to start
  but pieces still running elsewhere looks again every `poll_s` seconds. Returns {piece: "done"
  | "failed (log: PATH)" | "pending (...)"}."""
  status: dict[str, str] = {}
  started, stalled, last_note = time.time(), False, ""
  while True:
    listing = list_pieces()
    by_name = {p.name: p for p in listing}
    mine = [p for k, p in enumerate(listing) if k % count == index and p.name != "choose"]
    for p in mine:
      if p.name not in status and _agreed(p.done()):
        logging.info("%s: finished before", p.name)
        status[p.name] = "done"
    todo = [p for p in mine if p.name not in status]
    todo_names = {p.name for p in todo}
    waiting: dict[str, str] = {}  # piece -> what it waits for (another process has it)
    ran = False
    for p in todo:
      unmet = [n for n in p.needs if status.get(n) != "done"
               and not (n in by_name and _agreed(by_name[n].done()))]
      lost = [n for n in unmet if n in status or n not in todo_names]
      held = _holders(root, unmet)
      if held:
        waiting[p.name] = f"needs {next(iter(held))}"
        continue
      if lost:  # failed here, or another shard's and nobody runs it now
        status[p.name] = f"pending (needs {lost[0]})"
        continue
      if unmet:  # an earlier piece of this listing that another process holds
        waiting[p.name] = f"needs {unmet[0]}"
        continue
      claim = _claim(root, p.name)
      if claim is None:
        waiting[p.name] = "another process runs it"
        continue
      log = os.path.join(root, "logs", p.name.replace(" ", "_") + ".log")
      logging.info("[%d/%d] %s (%.0f min so far; log %s)", len(mine) - len(todo) + 1, len(mine),
                   p.name, (time.time() - started) / 60, log)
      with claim:
        try:
          with _piece_log(log):
            p.work()
          status[p.name] = "done"
        except lock.InUse as e:  # its directory is another process's now (locked before work)
          waiting[p.name] = f"{e.directory} is in use by {e.holder}"
          continue
        except Preempted:  # SIGTERM: the checkpoint is saved; the job ends (143), resumes later
          raise
        except Exception as e:  # noqa: BLE001 -- one piece's failure must not stop the others
          logging.exception("%s failed: %s", p.name, e)
          status[p.name] = f"failed (log: {log})"
      ran = True
      break
    if ran:
      stalled = False
      continue
    others = _holders(root, by_name)
    if waiting and not others and not stalled:
      stalled = True  # what it waited for may have finished just now: look once more
      continue
    if not waiting or not others:
      for name, reason in waiting.items():
        status[name] = f"pending ({reason})"
      break
    stalled = False
    name, reason = next(iter(waiting.items()))
    note = f"{name}: {reason}; " + ", ".join(f"{n} is run by {h}" for n, h in others.items())
    if note != last_note:  # once per change, not every poll
      logging.info("waiting (looking again every %.0f s): %s", poll_s, note)
      last_note = note
    time.sleep(poll_s)
  return status


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


def run(study, root: str, shard: str = "", poll_s: float = POLL_S,
        only: str = "") -> dict[str, str]:
  """The pipeline, or the pieces of shard i of n (`schedule`; start the same command several
  times to run pieces side by side), or only the pieces `only` selects with what they need
  (`select`). Each piece is skipped when finished before; a failing piece is logged and the
  others go on; the end is a status table. Returns {piece: "done" | "failed (log: PATH)" |
  "pending (...)"}; raises UatError if any failed."""
  index, count = parse_shard(shard)

  def listing() -> list[Piece]:
    return select(pieces(study, root), only)

  if only and not [p for p in listing() if p.name != "choose"]:
    raise UatError(f"--only={only!r} matches no piece of the study: name pieces as the log "
                   "does, with shell patterns, e.g. --only='evaluate * strong_last'")
  _compilation_cache(root)
  t0 = time.time()
  status = schedule(listing, root, index, count, poll_s)
  for p in listing():
    if p.name == "choose" and p.name not in status:
      status["choose"] = "pending (the sweep runs of every shard must finish)"
  print(status_table(status, index, count), flush=True)
  logging.info("study %s in %.0f min: %s", "shard %d/%d" % (index, count) if count > 1 else "run",
               (time.time() - t0) / 60, root)
  failed = [n for n, v in status.items() if v.startswith("failed")]
  if failed:
    raise UatError(f"{len(failed)} piece(s) of the study failed, e.g. {failed[0]} "
                   f"({status[failed[0]]}); fix the cause and rerun: finished pieces are kept")
  return status


def dry_run(study, root: str) -> str:
  """A table of every training run of the study (final runs of swept methods at the first swept
  value: the value does not change the cost): model, method, steps, FLOPs per step (XLA's cost
  analysis) and the estimated hours on each accelerator (train.estimate). Trains nothing;
  evaluations are counted, not estimated."""
  cache: dict[tuple, float] = {}
  chosen = {m: {"key": k, "chosen": v[0]} for m, (k, v) in study.sweep.items()}
  runs = {r.name: r for r in sweep_runs(study) + final_runs(study, chosen)
          + ablation_runs(study, chosen)}
  header = ["run", "model", "method", "steps", "GFLOP/step"] + [
      f"{a} h" for a in estimate.ACCELERATORS]
  lines = [f"Dry run of {len(runs)} training runs under {root}: {estimate.ESTIMATE_BASIS}", "",
           "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  totals = dict.fromkeys(estimate.ACCELERATORS, 0.0)
  for r in runs.values():
    c = r.config
    key = (c.model.name, c.data.name, losses.method_parts(c.method)[0], c.attack.steps,
           c.batch_size, c.dtype)
    if key not in cache:
      logging.info("cost analysis of %s / %s (%s)", c.model.name, c.method, c.data.name)
      cache[key] = estimate.step_flops(c)
    e = estimate.estimate(c, flops=cache[key])
    steps, hours = e["steps"], e["hours"]
    for a in totals:
      totals[a] += hours[a]
    lines.append(f"| {r.name} | {c.model.name} | {c.method} | {steps:,} | {cache[key] / 1e9:,.1f} | "
                 + " | ".join(f"{h:.3g}" for h in hours.values()) + " |")
  lines.append("| total | | | | | " + " | ".join(f"{h:.3g}" for h in totals.values()) + " |")
  evaluations = sum(bool(report.output_eps(spec, r.method))
                    for group, specs in ((final_runs(study, chosen), study.evals),
                                         (ablation_runs(study, chosen), study.ablation_evals))
                    for r in group for spec in specs.values())
  lines += ["", f"Evaluations (about {evaluations} outputs, not estimated) and the validation "
            "evaluations during training come on top."]
  for key, flops in cache.items():
    if key[0] == "preact_resnet18" and key[2]:
      rate = key[4] * estimate.ACCELERATORS["H100"] * estimate.UTILIZATION / flops
      lines.append(f"PreAct ResNet-18 PGD-{key[3]} AT step: {flops / 1e9:,.0f} GFLOP per batch of "
                   f"{key[4]}, so about {rate:,.0f} images/s on an H100 at "
                   f"{estimate.UTILIZATION:.0%}; "
                   "published GPU figures: about 270 images/s in float32 (Rice et al.'s logs) "
                   "and about 705 images/s (the FastAT benchmark).")
  return "\n".join(lines)


def status_table(status: dict[str, str], index: int = 0, count: int = 1) -> str:
  counts = {k: sum(v.startswith(k) for v in status.values()) for k in ("done", "failed",
                                                                       "pending")}
  lines = [f"Study status{f' (shard {index}/{count})' if count > 1 else ''}: "
           + ", ".join(f"{n} {k}" for k, n in counts.items()), "", "| piece | status |",
           "|---|---|"]
  lines += [f"| {name} | {value} |" for name, value in status.items()]
  return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# The pilot (docs/study_plan.md, "Regime").
# --------------------------------------------------------------------------------------------

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
  print("| candidate | train_size | epochs | best val PGD after decay | end val | end train | "
        "drop | gap | overfits |")
  print("|---|---|---|---|---|---|---|---|---|")
  for name, c in choice["candidates"].items():
    print(f"| {name} | {c['train_size']} | {c['epochs']:g} | {c['best_after_decay']:.3f} | "
          f"{c['end_val']:.3f} | {c['end_train']:.3f} | {c['drop']:.3f} | {c['gap']:.3f} | "
          f"{c['overfits']} |")
  print(f"chosen: {choice['chosen']} (robust overfitting observed: "
        f"{choice['overfitting_observed']})")
  return choice


FLAGS = flags.FLAGS


def _define_flags():  # at the entry point only: report.py imports this module as a library
  config_flags.DEFINE_config_file("study", None, "Study config, e.g. "
                                  "configs/fashion_mnist_study.py or ...:quick", lock_config=True)
  flags.DEFINE_string("root", None, "Directory holding the study's workdirs.")
  cli.define_multihost_flags()
  flags.DEFINE_bool("dry_run", False, "Print every training run with its FLOPs per step and "
                    "estimated hours on accelerators; train nothing.")
  flags.DEFINE_string("shard", "", "i/n: run only piece k with k mod n == i (several jobs, e.g. "
                      "a SLURM array: --shard=$SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT).")
  flags.DEFINE_string("only", "", "Comma-separated shell patterns of piece names (as the log "
                      "names them): run only those pieces and what they need, e.g. "
                      "--only='evaluate * strong_last'.")
  flags.mark_flags_as_required(["study", "root"])


def cli_main():
  _define_flags()

  def main():
    if cli.multihost_args():
      from uat_jax import sharding
      sharding.initialize_distributed(*cli.multihost_args())
    if FLAGS.dry_run:
      print(dry_run(FLAGS.study, FLAGS.root), flush=True)
      return
    run(FLAGS.study, FLAGS.root, FLAGS.shard, only=FLAGS.only)

  cli.run_app(main)


if __name__ == "__main__":
  cli_main()
