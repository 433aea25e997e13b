"""General file helpers: atomic writes (text, bytes, JSON), metrics.jsonl curves, matplotlib on
Agg, figures, and the checks that a workdir can be written.

Everything a command leaves on disk goes through `write_atomic`, so a reader (a resumed run, the
report, a user) never sees half a file. On several hosts only process 0 writes: the workdir is
on a filesystem they share.
"""

from __future__ import annotations

import io
import json
import os
import sys
from typing import Any, Union

from uat_jax.errors import UatError


def is_chief() -> bool:
  """True on the process that writes files: process 0 of a multi-process JAX job, and any
  process that has not imported JAX (it cannot be part of one), so that reading and writing
  reports never loads JAX."""
  jax = sys.modules.get("jax")
  return jax is None or jax.process_index() == 0


def user_cache_dir() -> str:
  """uat_jax's folder in the user's cache directory ($XDG_CACHE_HOME or ~/.cache)."""
  base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
  return os.path.join(base, "uat_jax")


def write_atomic(path: str, payload: Union[str, bytes], every_process: bool = False) -> None:
  """Writes a file under a temporary name, then renames it: readers never see half a file.
  Only process 0 writes, unless `every_process` (a file on each host's own disk)."""
  if not (every_process or is_chief()):
    return
  tmp = f"{path}.tmp-{os.getpid()}"
  with open(tmp, "wb") as f:
    f.write(payload.encode() if isinstance(payload, str) else payload)
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, path)


def write_json(path: str, value: Any, indent: int = 2) -> None:
  """`value` as JSON at `path` (atomically, creating the directory)."""
  if is_chief():
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  write_atomic(path, json.dumps(value, indent=indent))


def read_json(path: str) -> Any:
  with open(path) as f:
    return json.load(f)


def read_curves(metrics_path: str, prefixes: tuple[str, ...]) -> dict[str, list]:
  """{name: [[step, value], ...]} for every scalar of a metrics.jsonl (one JSON object per
  line, with its "step") whose name starts with one of `prefixes`, in step order. A step logged
  twice (files written before resumed runs rewrote them) counts once, with its last value; a
  line cut off by a killed writer is skipped."""
  curves: dict[str, dict] = {}
  for record in read_records(metrics_path):
    for k, v in record.items():
      if k.startswith(prefixes):
        curves.setdefault(k, {})[record["step"]] = v
  return {k: [[s, v] for s, v in sorted(c.items())] for k, c in curves.items()}


def read_records(metrics_path: str) -> list[dict]:
  """The records of a metrics.jsonl in file order, without a line cut off by a killed writer."""
  records = []
  with open(metrics_path, encoding="utf-8") as f:
    for line in f:
      try:
        records.append(json.loads(line))
      except json.JSONDecodeError:
        continue
  return records


def pyplot():
  """matplotlib.pyplot on the Agg backend: figures go to files, no display is needed."""
  import matplotlib  # deferred: a heavy dependency only figures need
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  return plt


def save_figure(fig, path: str) -> None:
  """Lays out a matplotlib figure, writes it to `path` as PNG (atomically, creating the
  directory) and closes it."""
  buf = io.BytesIO()
  fig.tight_layout()
  fig.savefig(buf, format="png")
  pyplot().close(fig)
  if is_chief():
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  write_atomic(path, buf.getvalue())


def check_workdir(workdir: str) -> None:
  """Fails early (before loading data) if `workdir` cannot be created or written; creates
  nothing."""
  path = os.path.abspath(workdir)
  while not os.path.exists(path):
    path = os.path.dirname(path)
  if not (os.path.isdir(path) and os.access(path, os.W_OK | os.X_OK)):
    reason = "not a directory" if not os.path.isdir(path) else "no write permission"
    raise UatError(f"workdir {workdir} is not writable ({path}: {reason}): choose another "
                   "--workdir")


def prepare_workdir(workdir: str) -> None:
  """Creates `workdir` and checks that a file can be written there, or a UatError saying so."""
  try:
    os.makedirs(workdir, exist_ok=True)
    probe = os.path.join(workdir, f".write_test.{os.getpid()}")  # unique: two starts may race
    with open(probe, "w") as f:
      f.write("ok")
    os.remove(probe)
  except OSError as e:
    raise UatError(f"workdir {workdir} is not writable ({e.strerror}): choose another "
                   "--workdir") from e
