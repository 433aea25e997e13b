"""A study worker on stand-in pieces, for the launcher's simulation (tests/test_launch.py): the
real scheduler (claims in ROOT/claims) over 8 pieces that record which device ran them.

  python tests/programs/placement_worker.py ROOT

Each piece writes ROOT/started/<piece>.<pid> when it starts; the first four finish only once
four pieces have started (so each of the four workers holds one of them: a worker runs one
piece at a time), then each appends "<piece> <device> <pid>" to ROOT/finished.log and marks
itself done.
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


def make(name, index):
  done_file = os.path.join(ROOT, "done", name)

  def work():
    os.makedirs(os.path.join(ROOT, "started"), exist_ok=True)
    open(os.path.join(ROOT, "started", f"{name}.{os.getpid()}"), "w").close()
    deadline = time.time() + 120
    while index < 4 and len(os.listdir(os.path.join(ROOT, "started"))) < 4:
      if time.time() > deadline:
        raise RuntimeError("the four workers never ran side by side")
      time.sleep(0.05)
    time.sleep(0.5)
    fd = os.open(os.path.join(ROOT, "finished.log"), os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    os.write(fd, f"{name} {DEVICE} {os.getpid()}\n".encode())
    os.close(fd)
    os.makedirs(os.path.dirname(done_file), exist_ok=True)
    open(done_file, "w").close()

  return Piece(name, lambda: os.path.exists(done_file), (), work)


status = scheduler.schedule(lambda: [make(f"p{i}", i) for i in range(8)], ROOT, poll_s=0.1)
sys.exit(0 if all(v == "done" for v in status.values()) else 1)
