"""One writer per workdir: an exclusive lock that names its holder.

Training, and evaluation writing into a workdir, hold `lock(directory, purpose)` while they
write. A second process asking for the same directory gets one line naming the holder (host,
pid, start time, command) and writes nothing. The study's claims use the same lock, and so does
preparing a dataset (`wait=True`: the second process waits, then finds the dataset prepared).

Mechanism: a POSIX record lock (fcntl.lockf) on DIR/.lock. The kernel releases it when the
holding process ends, however it ends (SIGKILL included), so a lock left by a dead process is
never in force: the next process takes it and logs whom it replaces (the holder's description
is left in the file only when its process did not exit normally). POSIX record locks are the
locks that NFS (the lock manager in v3, the protocol itself in v4) and the common cluster
filesystems carry between hosts; a lock file whose existence is the lock would survive a crash,
and flock() is local-only on some NFS clients. With several processes (jax.distributed) only
process 0 takes it: the others write nothing there. POSIX locks belong to a process (closing any
descriptor of the file drops them), so the locks this process holds are also kept in `_HELD`
and a second request from the same process is refused the same way.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
import sys
import time
from typing import Iterator, Optional

from absl import logging

from uat_jax import files
from uat_jax.errors import UatError

LOCK_FILE = ".lock"
_HELD: dict[str, dict] = {}  # real path of a directory -> the holder description of this process


class InUse(UatError):
  """The directory's lock is held by another process (or by this one, for another purpose):
  `directory` and `holder` (its description)."""

  def __init__(self, directory: str, holder: str, fix: Optional[str] = None):
    super().__init__(f"{directory} is in use by {holder}: "
                     f"{fix or 'wait for it to finish, or choose another directory'}")
    self.directory, self.holder = directory, holder


# The fix for a workdir that --mode=evaluate / jacobian cannot write (read-only, shared).
OUTPUT_DIR_FIX = ("write the results elsewhere with --config.evals.output_dir=DIR (the "
                  "checkpoints are only read)")


def _describe(holder: dict) -> str:
  started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder.get("started", 0)))
  return (f"pid {holder.get('pid')} on {holder.get('host')} ({holder.get('purpose')} since "
          f"{started}: {holder.get('command')})")


def _read(fd: int) -> Optional[dict]:
  os.lseek(fd, 0, os.SEEK_SET)
  text = os.read(fd, 1 << 16).decode(errors="replace").strip()
  if not text:
    return None
  try:
    return json.loads(text)
  except ValueError:
    return {"command": text[:200]}


def _take(fd: int, wait: bool = False) -> bool:
  """Takes the exclusive lock of the open file, waiting for it with `wait`, else not: False
  when another process holds it; other OS errors (no POSIX locks on the filesystem)
  propagate."""
  try:
    fcntl.lockf(fd, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
  except OSError as e:
    if e.errno in (errno.EACCES, errno.EAGAIN):
      return False
    raise
  return True


@contextlib.contextmanager
def lock(directory: str, purpose: str, fix: str = "choose another directory to write to", *,
         wait: bool = False, every_process: bool = False) -> Iterator[None]:
  """Holds the exclusive lock of `directory` for the block (creating the directory); raises
  InUse (a UatError) naming the holder when another process has it (with `wait`: waits for
  it instead), or the OS error and `fix` when the directory cannot be written. A no-op on
  processes other than 0 unless `every_process` (work that each process does, such as
  preparing a dataset on its host's disk)."""
  if not (every_process or files.is_chief()):
    yield
    return
  path = os.path.join(directory, LOCK_FILE)
  real = os.path.realpath(directory)
  if real in _HELD:
    raise InUse(directory, _describe(_HELD[real]))
  try:
    os.makedirs(directory, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
  except OSError as e:
    raise UatError(f"cannot write in {directory} ({e.strerror}): {fix}") from e
  try:
    try:
      taken = _take(fd, wait)
    except OSError as e:
      raise UatError(f"cannot lock {path} ({e.strerror}): the filesystem does not support "
                     "POSIX locks; choose a directory on one that does") from e
    if not taken:
      raise InUse(directory, _describe(_read(fd) or {}))
    previous = _read(fd)
    if previous:
      logging.warning("%s: took over the lock of %s, which ended without releasing it",
                      directory, _describe(previous))
    me = {"host": socket.gethostname(), "pid": os.getpid(), "started": time.time(),
          "purpose": purpose, "command": " ".join(sys.argv)[:500]}
    os.ftruncate(fd, 0)
    os.pwrite(fd, (json.dumps(me) + "\n").encode(), 0)
    os.fsync(fd)
    _HELD[real] = me
    try:
      yield
    finally:
      del _HELD[real]
      os.ftruncate(fd, 0)  # released normally: nothing to take over
  finally:
    os.close(fd)  # closing the descriptor releases the lock


def holder(directory: str) -> Optional[str]:
  """Who holds the lock of `directory` now (its description), or None when nobody does. Changes
  nothing: a free lock is taken and given back at once. Process 0's view on every process is
  the caller's business (other processes never take locks)."""
  real = os.path.realpath(directory)
  if real in _HELD:  # testing our own lock through a second descriptor would release it
    return _describe(_HELD[real])
  try:
    fd = os.open(os.path.join(directory, LOCK_FILE), os.O_RDWR)
  except OSError:
    return None  # no lock file (or none we may open): never locked here
  try:
    if not _take(fd):
      return _describe(_read(fd) or {})
    fcntl.lockf(fd, fcntl.LOCK_UN)
    return None
  except OSError:  # no POSIX locks here: nobody can hold one
    return None
  finally:
    os.close(fd)
