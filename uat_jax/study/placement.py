"""One training run per device: a study on a host with several accelerators runs one worker
process per device (or per group of `devices_per_run`), each seeing only its own devices, all
sharing ROOT's claims (uat_jax.study.scheduler), so a grid of independent runs keeps every
device busy instead of splitting each run's small batch over all of them.

Device visibility is per process: CUDA_VISIBLE_DEVICES for GPUs; for TPU chips the
TPU_VISIBLE_CHIPS / TPU_CHIPS_PER_PROCESS_BOUNDS / TPU_PROCESS_BOUNDS variables with a mesh
controller port of its own per process (groups of 1, 2 or 4 chips). The launcher imports no JAX
(a process that initialized the GPUs would hold their memory), restarts a worker that was killed
by a signal (its piece's claim was released with it, and training resumes from checkpoints),
forwards SIGTERM to the workers and waits for their checkpoints.
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from typing import Mapping, Optional, Sequence

from absl import logging

from uat_jax.errors import UatError

TPU_BOUNDS = {1: "1,1,1", 2: "1,2,1", 4: "2,2,1"}  # chips per process -> their bounds
TPU_PORT = 8476
RESTARTS = 3  # per worker: a worker killed more often than this is left dead


def _ids(value: str) -> list[str]:
  return [v.strip() for v in value.split(",") if v.strip() and v.strip() != "-1"]


def accelerators(env: Mapping[str, str] = os.environ) -> tuple[str, list[str]]:
  """("gpu" | "tpu" | "cpu", the ids of this host's devices that this process may use): the
  visibility variables when set (a scheduler such as SLURM sets them), else the GPUs
  `nvidia-smi -L` lists, else the TPU chips under /dev (accel* or vfio/N)."""
  if "CUDA_VISIBLE_DEVICES" in env:
    return "gpu", _ids(env["CUDA_VISIBLE_DEVICES"])
  if "TPU_VISIBLE_CHIPS" in env:
    return "tpu", _ids(env["TPU_VISIBLE_CHIPS"])
  if shutil.which("nvidia-smi"):
    try:
      listing = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30)
      gpus = [line for line in listing.stdout.splitlines() if line.startswith("GPU ")]
    except (OSError, subprocess.SubprocessError):
      gpus = []
    if gpus:
      return "gpu", [str(i) for i in range(len(gpus))]
  chips = glob.glob("/dev/accel[0-9]*") or glob.glob("/dev/vfio/[0-9]*")
  if chips:
    return "tpu", [str(i) for i in range(len(chips))]
  return "cpu", []


def worker_envs(kind: str, ids: Sequence[str], devices_per_run: int = 1) -> list[dict[str, str]]:
  """The environment of each worker: one per group of `devices_per_run` devices."""
  if devices_per_run < 1 or len(ids) % devices_per_run:
    raise UatError(f"--devices_per_run={devices_per_run} does not divide the {len(ids)} "
                   f"{kind.upper()} devices of this host ({','.join(ids)})")
  groups = [list(ids[i:i + devices_per_run]) for i in range(0, len(ids), devices_per_run)]
  if kind == "gpu":
    return [{"CUDA_VISIBLE_DEVICES": ",".join(g)} for g in groups]
  if kind == "tpu":
    if devices_per_run not in TPU_BOUNDS:
      raise UatError(f"--devices_per_run={devices_per_run}: a TPU worker takes 1, 2 or 4 chips "
                     "(or run one process over the host's chips with --devices_per_run equal "
                     "to their number)")
    return [{"TPU_VISIBLE_CHIPS": ",".join(g), "TPU_VISIBLE_DEVICES": ",".join(g),
             "TPU_CHIPS_PER_PROCESS_BOUNDS": TPU_BOUNDS[devices_per_run],
             "TPU_PROCESS_BOUNDS": "1,1,1", "TPU_MESH_CONTROLLER_PORT": str(TPU_PORT + i),
             "TPU_MESH_CONTROLLER_ADDRESS": f"localhost:{TPU_PORT + i}"}
            for i, g in enumerate(groups)]
  return []


def plan(env: Mapping[str, str], devices_per_run: int) -> list[dict[str, str]]:
  """The workers this host should start: none (run in this process) when it has at most one
  group of devices."""
  kind, ids = accelerators(env)
  if len(ids) <= devices_per_run:
    return []
  return worker_envs(kind, ids, devices_per_run)


def launch(command: Sequence[str], envs: Sequence[Mapping[str, str]], log_dir: str,
           restarts: int = RESTARTS, poll_s: float = 1.0,
           env: Optional[Mapping[str, str]] = None) -> int:
  """Runs `command` once per worker environment (each added to `env`, default os.environ),
  logging to log_dir/worker<i>.log; restarts a worker killed by a signal (at most `restarts`
  times each). SIGTERM to this process goes to every worker, which save and exit. Returns the
  largest exit status (143 after SIGTERM)."""
  os.makedirs(log_dir, exist_ok=True)
  base = dict(os.environ if env is None else env)
  procs: dict[int, subprocess.Popen] = {}
  left = [restarts] * len(envs)
  stopping = False

  def start(i):
    describe = " ".join(f"{k}={v}" for k, v in envs[i].items() if "VISIBLE" in k)
    log = os.path.join(log_dir, f"worker{i}.log")
    logging.info("worker %d (%s): log %s", i, describe, log)
    with open(log, "a") as f:
      procs[i] = subprocess.Popen(list(command), env={**base, **envs[i]}, stdout=f,
                                  stderr=subprocess.STDOUT)

  def forward(signum, frame):
    nonlocal stopping
    stopping = True
    for p in procs.values():
      if p.poll() is None:
        p.send_signal(signal.SIGTERM)

  main_thread = threading.current_thread() is threading.main_thread()
  previous = signal.signal(signal.SIGTERM, forward) if main_thread else None
  codes: dict[int, int] = {}
  try:
    for i in range(len(envs)):
      start(i)
    while len(codes) < len(envs):
      time.sleep(poll_s)
      for i, p in list(procs.items()):
        code = p.poll()
        if code is None or i in codes:
          continue
        if code < 0 and left[i] > 0 and not stopping:
          left[i] -= 1
          logging.warning("worker %d was killed (signal %d); starting it again (its piece "
                          "resumes from its checkpoints)", i, -code)
          start(i)
          continue
        codes[i] = 128 - code if code < 0 else code
  finally:
    if main_thread:
      signal.signal(signal.SIGTERM, previous)
  return max(codes.values(), default=0)


def worker_command(argv: Sequence[str]) -> list[str]:
  """This study command as one worker runs it: the same flags, with --worker."""
  return [sys.executable, "-m", "uat_jax.study", *argv[1:], "--worker"]
