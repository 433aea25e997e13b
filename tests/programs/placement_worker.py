"""A study worker on stand-in pieces, for the launcher's simulation (tests/test_launch.py): the
real scheduler (claims in ROOT/claims) over 8 pieces that record which device ran them.

  python tests/programs/placement_worker.py ROOT

Each piece writes ROOT/started/<piece>.<pid> when it starts; the first four finish only once
four pieces have started (so each of the four workers holds one of them: a worker runs one
piece at a time), and p4 only once ROOT/killed exists (the test kills p4's first worker, then
creates it, so the kill always lands inside p4); then each appends "<piece> <device> <pid>" to
ROOT/finished.log in one O_APPEND write, which is also its done marker (a marker written in a
second step could be lost to a SIGKILL between the two, and the piece would run twice).
"""

import dataclasses
import os
import sys
import time
from typing import Callable

from uat_jax.study import scheduler

ROOT = sys.argv[1]
DEVICE = os.environ.get("CUDA_VISIBLE_DEVICES", "?")


@dataclasses.dataclass
class Piece:  # what scheduler.schedule reads of a piece
  name: str
  done: Callable[[], bool]
  needs: tuple
  work: Callable[[], None]


def finished():
  try:
    with open(os.path.join(ROOT, "finished.log")) as f:
      return {line.split()[0] for line in f if line.strip()}
  except FileNotFoundError:
    return set()


def make(name, index):

  def work():
    os.makedirs(os.path.join(ROOT, "started"), exist_ok=True)
    open(os.path.join(ROOT, "started", f"{name}.{os.getpid()}"), "w").close()
    deadline = time.time() + 120
    while index < 4 and len(os.listdir(os.path.join(ROOT, "started"))) < 4:
      if time.time() > deadline:
        raise RuntimeError("the four workers never ran side by side")
      time.sleep(0.05)
    while name == "p4" and not os.path.exists(os.path.join(ROOT, "killed")):
      if time.time() > deadline:
        raise RuntimeError("the test never killed p4's worker")
      time.sleep(0.05)
    time.sleep(0.5)
    fd = os.open(os.path.join(ROOT, "finished.log"), os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    os.write(fd, f"{name} {DEVICE} {os.getpid()}\n".encode())
    os.close(fd)

  return Piece(name, lambda: name in finished(), (), work)


status = scheduler.schedule(lambda: [make(f"p{i}", i) for i in range(8)], ROOT, poll_s=0.1)
sys.exit(0 if all(v == "done" for v in status.values()) else 1)
