"""Checkpoints that survive preemption and damage: orbax managers, restoring the newest checkpoint
that reads back, shape checks, and SIGTERM handling.

Orbax writes each step into a temporary directory and renames it when complete, so a process
killed mid-save leaves no checkpoint that would be restored. A finished checkpoint damaged later
(a copy cut short, a truncated file) fails to read: it is reported, moved to
`W/corrupt_checkpoints/<step>` when training (kept for inspection, never deleted), and the next
older one is used. Orbax stores arrays with tensorstore and metadata as JSON: nothing is unpickled.

Silent corruption (a flipped bit that still decodes) is caught by the checksum records of
uat_jax.checksums, written as each save completes and verified before a restore; a mismatch is
handled like any damaged checkpoint. Storage failures name the step whose write failed and what
is kept.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import time
from typing import Any, Callable, Iterator, Optional

import jax
import orbax.checkpoint as ocp
from absl import logging

from uat_jax import checksums
from uat_jax.errors import STORAGE_ERRNOS, STORAGE_TEXTS, UatError

CORRUPT_DIR = "corrupt_checkpoints"
BEST_DIR = "checkpoints_best"
TMP_SUFFIX = checksums.TMP_SUFFIX
CHECKSUM_DIR = checksums.CHECKSUM_DIR


def _chain(e: BaseException) -> Iterator[BaseException]:
  """`e` and the exceptions it was raised from (its cause, else its context), in turn."""
  while e is not None:
    yield e
    e = e.__cause__ or e.__context__


def storage_error(e: BaseException, what: str,
                  kept: str = "what was written before is kept") -> Optional[UatError]:
  """A one-line UatError for a storage failure (disk full, quota, read-only, I/O error) found in
  `e` or the exceptions it was raised from, saying what failed and what is `kept`; None for
  anything else."""
  for seen in _chain(e):
    if isinstance(seen, OSError) and seen.errno in STORAGE_ERRNOS:
      cause = STORAGE_ERRNOS[seen.errno]
    else:
      cause = next((c for t, c in STORAGE_TEXTS.items() if t in str(seen)), None)
    if cause:
      return UatError(f"{cause} while {what}; {kept}: free space (or choose another "
                      "--workdir) and rerun the same command")
  return None


def timeout_error(e: BaseException, what: str,
                  kept: str = "what was written before is kept") -> Optional[UatError]:
  """A one-line UatError when `e` (or an exception it was raised from) is orbax's time limit on
  a background write (AsyncOptions.timeout_secs, 20 minutes by default): seen when a process is
  suspended (SIGSTOP, a scheduler's suspend) that long while a checkpoint is being written, or
  when the storage hangs. None for anything else."""
  if any(isinstance(seen, TimeoutError) for seen in _chain(e)):
    return UatError(f"{what} did not finish within orbax's time limit for background writes "
                    f"(the process was suspended, or the storage stopped answering); {kept}: "
                    "rerun the same command to resume from it (suspend with SIGTERM, which "
                    "checkpoints and exits, rather than SIGSTOP)")
  return None


@contextlib.contextmanager
def storage_guard(what: str, kept: Optional[Callable[[], str]] = None):
  """Turns a storage failure (storage_error) or a write past orbax's time limit (timeout_error)
  inside the block into one line; `kept()` says what is kept, asked after the failure."""
  try:
    yield
  except UatError:
    raise
  except Exception as e:  # noqa: BLE001 -- orbax/tensorstore raise many types
    said = [kept()] if kept else []
    error = storage_error(e, what, *said) or timeout_error(e, what, *said)
    if error is None:
      raise
    raise error from None


def kept_checkpoint(mngr: ocp.CheckpointManager) -> str:
  """What a failed write leaves: "checkpoint N (the last complete one) is kept", or that none
  is complete yet."""
  try:
    mngr.reload()
    steps = mngr.all_steps()
  except Exception:  # noqa: BLE001 -- the storage itself may be failing
    steps = [int(n) for n in os.listdir(str(mngr.directory)) if n.isdigit()]
  if not steps:
    return f"no checkpoint in {mngr.directory} is complete yet"
  return f"checkpoint {max(steps)} (the last complete one) is kept"


def save(mngr: ocp.CheckpointManager, step: int, state,
         metrics: Optional[dict[str, float]] = None) -> None:
  """Starts writing checkpoint `step` (orbax writes it in the background; its checksum record is
  written as it completes, checksums.record_completed), after the previous write finished
  (`finish`). With `metrics` (a best-checkpoint manager) orbax keeps the step only if its
  metric is the best so far."""
  finish(mngr)
  kind = "the best checkpoint" if metrics is not None else "checkpoint"
  with storage_guard(f"writing {kind} {step} in {mngr.directory}",
                     lambda: kept_checkpoint(mngr)):
    if metrics is None:
      mngr.save(step, args=ocp.args.StandardSave(state))
    else:
      mngr.save(step, args=ocp.args.StandardSave(state), metrics=metrics, force=True)


def finish(mngr: ocp.CheckpointManager) -> None:
  """Waits for the write in flight; a storage failure names that write's step and what is kept.
  Then records the checksums of any complete step without one (write_checksums)."""
  step = mngr.latest_step()  # the step being written, if one is (orbax lists it at save())
  with storage_guard(f"writing checkpoint {step} in {mngr.directory}",
                     lambda: kept_checkpoint(mngr)):
    mngr.wait_until_finished()
  with storage_guard(f"writing the checksum records of {mngr.directory}",
                     lambda: kept_checkpoint(mngr)):
    checksums.write_checksums(mngr)


def log_partial(workdir: str) -> None:
  """Names the folders of checkpoints whose writing never finished (a kill or a full disk
  mid-save; orbax never restores them), which the training managers remove as they open
  (orbax's cleanup_tmp_directories). Process 0 only."""
  if jax.process_index() != 0:
    return
  for which in ("last", "best"):
    for path in glob.glob(os.path.join(directory(workdir, which), f"*{TMP_SUFFIX}*")):
      logging.warning("removed %s, a checkpoint whose writing did not finish", path)


def directory(workdir: str, which: str = "last") -> str:
  """W/checkpoints (the newest few, for resuming) or, which="best", W/checkpoints_best."""
  return os.path.join(os.path.abspath(workdir), BEST_DIR if which == "best" else "checkpoints")


def manager(workdir: str, max_to_keep: int) -> ocp.CheckpointManager:
  """The training manager of `workdir`: keeps the newest `max_to_keep` complete checkpoints."""
  options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True,
                                         cleanup_tmp_directories=True,
                                         async_options=checksums.async_options(directory(workdir)))
  return ocp.CheckpointManager(directory(workdir), options=options,
                               item_handlers=ocp.StandardCheckpointHandler())


def _best_options(metric: str, mode: str, **kwargs) -> ocp.CheckpointManagerOptions:
  return ocp.CheckpointManagerOptions(
      best_fn=lambda metrics: metrics[metric], best_mode=mode,
      keep_checkpoints_without_metrics=False, **kwargs)


def best_manager(workdir: str, metric: str, mode: str = "max") -> ocp.CheckpointManager:
  """W/checkpoints_best: orbax's best-checkpoint support keeps the one checkpoint whose `metric`
  (saved with it) is the highest (mode "max") or lowest ("min") so far, across resumes."""
  return ocp.CheckpointManager(directory(workdir, "best"),
                               options=_best_options(
                                   metric, mode, max_to_keep=1, create=True,
                                   cleanup_tmp_directories=True,
                                   async_options=checksums.async_options(
                                       directory(workdir, "best"))),
                               item_handlers=ocp.StandardCheckpointHandler())


def reader(workdir: str, which: str = "last", metric: str = "",
           mode: str = "max") -> ocp.CheckpointManager:
  """A manager that only reads `workdir`'s checkpoints (evaluation, Jacobians), with the PyTree
  handler so that it can restore part of a checkpoint (restore_readable with a dict). which:
  "last" (W/checkpoints) or "best" (W/checkpoints_best, ranked by `metric`)."""
  path = directory(workdir, which)
  if not os.path.isdir(path):
    if which == "best":
      raise UatError(f"no best checkpoint in {path}: the run kept none (set "
                     "--config.best_checkpoint.metric when training, e.g. eval/pgd_accuracy), "
                     "or pass --config.evals.checkpoint=last")
    raise UatError(f"no checkpoint in {path}: train first (--mode=train) or pass another "
                   "--workdir")
  options = (_best_options(metric, mode, create=False) if which == "best"
             else ocp.CheckpointManagerOptions(create=False))
  return ocp.CheckpointManager(path, options=options,
                               item_handlers=ocp.PyTreeCheckpointHandler())


def _shapes(tree) -> dict[str, tuple]:
  return {jax.tree_util.keystr(p, simple=True, separator="/"): tuple(leaf.shape)
          for p, leaf in jax.tree_util.tree_leaves_with_path(tree)}


def check_shapes(saved_tree, wanted_tree, config, path: str) -> None:
  """Compares parameter shapes before restoring, so a checkpoint of another model or dataset is
  reported by name instead of failing inside orbax."""
  saved, wanted = _shapes(saved_tree), _shapes(wanted_tree)
  if saved == wanted:
    return
  diff = sorted(set(saved) ^ set(wanted)) or [k for k in wanted if saved[k] != wanted[k]]
  k = diff[0]
  raise UatError(
      f"the checkpoint in {path} does not fit the config (model {config.model.name}, "
      f"dataset {config.data.name}): parameter {k} is {saved.get(k, 'missing')} there and "
      f"{wanted.get(k, 'missing')} here; pass the config it was trained with")


def restore_readable(mngr: ocp.CheckpointManager, abstract, config,
                     quarantine: Optional[str] = None,
                     only_step: Optional[int] = None) -> tuple[Any, Optional[int]]:
  """The newest step that reads back, restored into `abstract` (shapes, dtypes, shardings) after
  check_shapes against the config, and that step; (None, None) when there is no checkpoint.
  `abstract` is a whole TrainState (training), or a dict of some of its fields (a manager from
  `reader`): then only those are read, e.g. {"params", "batch_stats", "step"} for inference,
  never the optimizer state. With `only_step`, only that step is tried.
  Newer steps that failed are logged and, with `quarantine` (a directory) and once an older step
  has restored with the same config (so the config is not to blame), moved there so that
  training can write those steps again. A checkpoint that does not fit the config is a UatError
  at once; if no step reads back, nothing is moved and a UatError names the newest failure."""

  partial = isinstance(abstract, dict)
  params = abstract["params"] if partial else abstract.params

  def restore_step(step):
    checksums.verify(mngr, step)  # before orbax reads anything: a damaged file is named, not traced
    check_shapes(mngr.item_metadata(step)["params"], params, config, str(mngr.directory))
    if partial:
      restore_args = jax.tree.map(lambda s: ocp.ArrayRestoreArgs(sharding=s.sharding), abstract)
      return mngr.restore(step, args=ocp.args.PyTreeRestore(
          item=abstract, restore_args=restore_args, partial_restore=True))
    return mngr.restore(step, args=ocp.args.StandardRestore(abstract))

  mngr.reload()
  steps = sorted(mngr.all_steps(), reverse=True)
  if only_step is not None:
    if only_step not in steps:
      raise UatError(f"no checkpoint of step {only_step} in {mngr.directory} (it has "
                     f"{sorted(steps) or 'none'}): pass one of those, or step=None for the newest")
    steps = [only_step]
  failures = []
  for step in steps:
    try:
      restored = restore_step(step)
    except UatError:
      raise
    except Exception as e:  # noqa: BLE001 -- orbax/tensorstore raise many types for bad files
      detail = " ".join(str(e).split()).split(" See full TensorStore details")[0]
      reason = f"{type(e).__name__}: {detail[:200]}"
      failures.append((step, reason))
      logging.warning("checkpoint at step %d in %s is unreadable (%s); trying an older one",
                      step, mngr.directory, reason)
      continue
    if quarantine is not None:
      for bad, _ in failures:
        logging.warning("moved the unreadable checkpoint of step %d to %s", bad,
                        _move_aside(mngr, bad, quarantine))
    return restored, step
  if failures:
    step, reason = failures[0]
    if all("tree structures do not match" in r for _, r in failures):
      raise UatError(
          f"the checkpoints in {mngr.directory} hold another train state than this config builds "
          f"(step {step}: {reason}): an optimizer setting (optimizer.name, weight_decay or "
          "weight_average) differs from the run's; resume with the run's own settings (its "
          "config.json) or use another --workdir (the checkpoints are kept as they are)")
    if all(r.startswith(checksums.CorruptCheckpoint.__name__) for _, r in failures):
      cause = "the checkpoint data changed on disk (checksums differ)"
    elif any("FileNotFoundError" in r or "NOT_FOUND" in r or "No such file" in r
             for _, r in failures):
      cause = "checkpoint files are missing"
    else:
      cause = "the checkpoint files cannot be decoded"
    raise UatError(f"no readable checkpoint in {mngr.directory}: {cause}; step {step} failed "
                   f"({reason}); restore the directory from a copy, or move it aside to start "
                   "over")
  return None, None


def _move_aside(mngr: ocp.CheckpointManager, step: int, quarantine: str) -> str:
  os.makedirs(quarantine, exist_ok=True)
  target = os.path.join(quarantine, f"{step}-{time.strftime('%Y%m%d-%H%M%S')}")
  shutil.move(os.path.join(str(mngr.directory), str(step)), target)
  manifest = checksums.manifest_path(mngr, step)
  if os.path.exists(manifest):  # the step will be written again: its checksums go with it
    shutil.move(manifest, os.path.join(target, "recorded_checksums.json"))
  mngr.reload()
  return target


class Preemption:
  """Turns SIGTERM into a request to checkpoint and stop at the next step boundary.

  Single process: a signal handler sets a flag (the previous handler is restored on exit).
  Several processes (jax.distributed): JAX's preemption sync point, so that every host stops at
  the same step; JAX's coordination service receives the signal there.
  """

  def __init__(self, mngr: ocp.CheckpointManager):
    self._mngr = mngr
    self.signal: Optional[int] = None
    self._previous = None

  def __enter__(self):
    if jax.process_count() == 1:
      try:
        self._previous = signal.signal(signal.SIGTERM, self._handle)
      except ValueError:  # not the main thread: no handler, SIGTERM keeps its default
        self._previous = None
    return self

  def _handle(self, signum, frame):
    del frame
    self.signal = signum

  def requested(self, step: int) -> bool:
    if jax.process_count() > 1:
      return bool(self._mngr.reached_preemption(step))
    return self.signal is not None

  def __exit__(self, *exc):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)
    return False
