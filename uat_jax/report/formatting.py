"""How the report writes numbers: accuracy points, intervals, p-values."""

from __future__ import annotations

from typing import Optional

import numpy as np

from uat_jax import stats


def pts(x: float) -> str:
  return f"{100 * x:+.1f}"


def ci(interval: stats.Interval) -> str:
  return f"{pts(interval.estimate)} [{pts(interval.low)}, {pts(interval.high)}]"


def mean_ci(values: Optional[np.ndarray]) -> str:
  """Mean over seeds in % with the seed-bootstrap interval (one seed: the value alone)."""
  if values is None or not len(values):
    return "pending"
  if len(values) == 1:
    return f"{100 * values[0]:.1f}"
  i = stats.seed_mean(values)
  return f"{100 * i.estimate:.1f} [{100 * i.low:.1f}, {100 * i.high:.1f}]"


def p_values(values: list[float]) -> str:
  return ", ".join(f"{p:.2g}" for p in values)
