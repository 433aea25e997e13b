"""What the command-line entry points (uat_jax.main, uat_jax.study) share: log filtering and the
one-line error exit."""

from __future__ import annotations

import logging as pylogging
import sys


class OwnInfoOnly(pylogging.Filter):
  """Keeps INFO lines from uat_jax and clu (progress, metrics, ETA); WARNING+ from the rest."""

  def filter(self, record):
    if record.levelno >= pylogging.WARNING:
      return True
    return any(part in record.pathname for part in ("uat_jax", "/clu/"))


def fail(message: str):
  """Prints `error: <message>` as one line on stderr and exits with status 2."""
  print(f"error: {' '.join(str(message).split())}", file=sys.stderr)
  sys.exit(2)
