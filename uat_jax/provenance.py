"""What produced a result: the uat_jax version, the git commit of a checkout (with a dirty flag),
the Python, JAX, jaxlib and Flax versions, the backend and its devices, and the date. Recorded
in every results.json, Jacobian output and study data file, beside the threat model and seeds
the caller adds."""

from __future__ import annotations

import datetime
import functools
import os
import platform
import subprocess
import sys
from importlib import metadata
from typing import Any, Optional

from uat_jax.version import VERSION

SCHEMA_VERSION = 2  # of results.json: 2 adds "provenance" and packs the masks (uat_jax.masks)


@functools.cache
def _git(package_dir: str) -> Optional[dict[str, Any]]:
  """{"commit", "dirty"} of the git checkout holding the package, or None outside one (an
  installed wheel) or without git."""
  root = os.path.dirname(package_dir)
  if not os.path.exists(os.path.join(root, ".git")):
    return None
  try:
    commit = subprocess.run(["git", "-C", root, "rev-parse", "HEAD"], capture_output=True,
                            text=True, timeout=10, check=True).stdout.strip()
    status = subprocess.run(["git", "-C", root, "status", "--porcelain", "--untracked-files=no"],
                            capture_output=True, text=True, timeout=10, check=True).stdout
  except (OSError, subprocess.SubprocessError):
    return None
  return {"commit": commit, "dirty": bool(status.strip())}


def _version(distribution: str) -> Optional[str]:
  try:
    return metadata.version(distribution)
  except metadata.PackageNotFoundError:
    return None


def record(**extra: Any) -> dict[str, Any]:
  """The provenance of a result made now, with `extra` (threat model, seeds, ...) added. JAX's
  backend and devices are read only when JAX is already imported (a result of JAX code): a
  report built from JSON loads no JAX for them."""
  out: dict[str, Any] = {
      "uat_jax": VERSION, "git": _git(os.path.dirname(os.path.abspath(__file__))),
      "python": platform.python_version(),
      **{name: _version(name) for name in ("jax", "jaxlib", "flax")},
      "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
  jax = sys.modules.get("jax")
  if jax is not None:
    devices = jax.devices()
    out.update(backend=jax.default_backend(), device_kind=devices[0].device_kind,
               device_count=len(devices), process_count=jax.process_count())
  out.update(extra)
  return out
