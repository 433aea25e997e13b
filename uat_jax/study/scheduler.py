"""Running the study's pieces: claims, shards and polling, so that several processes (on one
machine or on hosts sharing ROOT) share one study. Each piece runs under its claim, a lock in
ROOT/claims/ (uat_jax.lock) released however the process ends; a piece another process holds is
left to it; a process with nothing to start but pieces still running elsewhere looks again every
`poll_s` seconds. Rerunning skips finished pieces; progress and the time so far are logged
before every piece, each piece's log goes to ROOT/logs/<piece>.log, and the end is a status
table."""

from __future__ import annotations

import contextlib
import logging as pylogging
import os
import sys
import time
from typing import TYPE_CHECKING, Callable, Optional

from absl import logging

from uat_jax import lock, tables
from uat_jax.errors import Preempted, UatError

if TYPE_CHECKING:
  from uat_jax.study import pieces as pieces_lib

POLL_S = 30.0  # how often a process with nothing to start looks again at the pieces others run


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


def claim_dir(root: str, name: str) -> str:
  """ROOT/claims/<piece>: its lock says which process runs the piece now."""
  return os.path.join(root, "claims", name.replace(" ", "_"))


def _process_count() -> int:
  """JAX's process count; 1 in a process that has not imported JAX (the scheduler itself needs
  none: its pieces bring it)."""
  jax = sys.modules.get("jax")
  return 1 if jax is None else jax.process_count()


def _agreed(value: bool) -> bool:
  """Process 0's answer on every process (skip and resume decisions read files, which hosts of
  a cached shared filesystem can see differently)."""
  if _process_count() == 1:
    return value
  import numpy as np
  from jax.experimental import multihost_utils
  return bool(multihost_utils.broadcast_one_to_all(np.asarray(value)))


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
  if _process_count() > 1:
    return {}
  found = {n: lock.holder(claim_dir(root, n)) for n in names}
  return {n: h for n, h in found.items() if h}


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


def _blocker(p: pieces_lib.Piece, status: dict[str, str], by_name: dict, todo_names: set,
             root: str) -> tuple[str, str]:
  """Whether piece `p` can start: ("start", ""), ("wait", what another process still runs) or
  ("pending", the need that failed here or that nobody runs)."""
  unmet = [n for n in p.needs if status.get(n) != "done"
           and not (n in by_name and _agreed(by_name[n].done()))]
  held = _holders(root, unmet)
  if held:
    return "wait", f"needs {next(iter(held))}"
  lost = [n for n in unmet if n in status or n not in todo_names]
  if lost:  # failed here, or another shard's and nobody runs it now
    return "pending", f"needs {lost[0]}"
  if unmet:  # an earlier piece of this listing that another process holds
    return "wait", f"needs {unmet[0]}"
  return "start", ""


def _run_piece(p: pieces_lib.Piece, root: str, status: dict[str, str],
               counter: str, elapsed: str) -> Optional[str]:
  """Runs `p` under its claim, recording "done" or "failed (log: PATH)" in `status`; returns
  None when it ran, else what it waits for (its claim or directory is another process's)."""
  claim = _claim(root, p.name)
  if claim is None:
    return "another process runs it"
  log = os.path.join(root, "logs", p.name.replace(" ", "_") + ".log")
  with claim:
    if _agreed(p.done()):  # finished by another process between the listing and the claim
      logging.info("%s: finished by another process", p.name)
      status[p.name] = "done"
      return None
    logging.info("%s %s (%s; log %s)", counter, p.name, elapsed, log)
    try:
      with _piece_log(log):
        p.work()
      status[p.name] = "done"
    except lock.InUse as e:  # its directory is another process's now (locked before work)
      return f"{e.directory} is in use by {e.holder}"
    except Preempted:  # SIGTERM: the checkpoint is saved; the job ends (143), resumes later
      raise
    except Exception as e:  # noqa: BLE001 -- one piece's failure must not stop the others
      logging.exception("%s failed: %s", p.name, e)
      status[p.name] = f"failed (log: {log})"
  return None


def schedule(list_pieces: Callable[[], list[pieces_lib.Piece]], root: str, index: int = 0,
             count: int = 1, poll_s: float = POLL_S) -> dict[str, str]:
  """Runs the pieces of shard `index` of `count` (piece k of the listing belongs to shard k mod
  count), one at a time, in listing order, listing them again after each (a finished sweep
  unlocks the final runs); see the module docstring for how processes share them. Returns
  {piece: "done" | "failed (log: PATH)" | "pending (...)"}."""
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
    waiting: dict[str, str] = {}  # piece -> what it waits for (another process has it)
    ran = False
    for p in todo:
      verdict, reason = _blocker(p, status, by_name, {t.name for t in todo}, root)
      if verdict == "pending":
        status[p.name] = f"pending ({reason})"
        continue
      if verdict == "start":
        progress = (f"[{len(mine) - len(todo) + 1}/{len(mine)}]",
                    f"{(time.time() - started) / 60:.0f} min so far")
        reason = _run_piece(p, root, status, *progress)
        ran = reason is None
        if ran:
          break
      waiting[p.name] = reason
    if ran:
      stalled = False
      continue
    others = _holders(root, by_name)
    if waiting and not others and not stalled:
      stalled = True  # what it waited for may have finished just now: look once more
      continue
    if not waiting or not others:
      status.update({name: f"pending ({reason})" for name, reason in waiting.items()})
      break
    stalled = False
    name, reason = next(iter(waiting.items()))
    note = f"{name}: {reason}; " + ", ".join(f"{n} is run by {h}" for n, h in others.items())
    if note != last_note:  # once per change, not every poll
      logging.info("waiting (looking again every %.0f s): %s", poll_s, note)
      last_note = note
    time.sleep(poll_s)
  return status


def status_table(status: dict[str, str], index: int = 0, count: int = 1) -> str:
  counts = {k: sum(v.startswith(k) for v in status.values()) for k in ("done", "failed",
                                                                       "pending")}
  return "\n".join([f"Study status{f' (shard {index}/{count})' if count > 1 else ''}: "
                    + ", ".join(f"{n} {k}" for k, n in counts.items()), "",
                    tables.markdown_table(["piece", "status"], list(status.items()))])


def run(study, root: str, shard: str = "", poll_s: float = POLL_S,
        only: str = "") -> dict[str, str]:
  """The pipeline, or the pieces of shard i of n (`schedule`; start the same command several
  times to run pieces side by side), or only the pieces `only` selects with what they need
  (`pieces.select`). Each piece is skipped when finished before; a failing piece is logged and
  the others go on; the end is a status table. Returns {piece: "done" | "failed (log: PATH)" |
  "pending (...)"}; raises UatError if any failed."""
  from uat_jax import sharding
  from uat_jax.study import pieces as pieces_lib
  index, count = parse_shard(shard)

  def listing() -> list[pieces_lib.Piece]:
    return pieces_lib.select(pieces_lib.pieces(study, root), only)

  if only and not [p for p in listing() if p.name != "choose"]:
    raise UatError(f"--only={only!r} matches no piece of the study: name pieces as the log "
                   "does, with shell patterns, e.g. --only='evaluate * strong_last'")
  # The study's models share shapes: most programs compile once for all of them, and a rerun
  # compiles nothing it compiled before.
  sharding.compilation_cache(os.path.join(root, "jax_cache"))
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
