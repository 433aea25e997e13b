"""How the report writes numbers: accuracy points, intervals, p-values."""

from __future__ import annotations

import math
from typing import Optional

import numpy as np

from uat_jax import stats


def pts(x: float, digits: int = 1) -> str:
  return f"{100 * x:+.{digits}f}"


def ci(interval: stats.Interval) -> str:
  """Points with the interval in brackets (one seed: no interval)."""
  if math.isinf(interval.low):
    return f"{pts(interval.estimate)} [no interval: one seed]"
  return f"{pts(interval.estimate)} [{pts(interval.low)}, {pts(interval.high)}]"


def ratio(interval: stats.Interval) -> str:
  if math.isinf(interval.high):
    return f"{interval.estimate:.2f}x [no interval: one seed]"
  return f"{interval.estimate:.2f}x [{interval.low:.2f}, {interval.high:.2f}]"


def excludes(interval: stats.Interval) -> str:
  """What a difference's interval rules out, in words."""
  if math.isinf(interval.low):
    return "one seed: excludes nothing"
  if interval.low > 0:
    return f"excludes 0 and differences below {pts(interval.low)}"
  if interval.high < 0:
    return f"excludes 0 and differences above {pts(interval.high)}"
  return f"excludes differences above {pts(interval.high)} and below {pts(interval.low)}"


def mean_ci(values: Optional[np.ndarray]) -> str:
  """Mean over seeds in % with the t-interval over seeds (one seed: the value alone)."""
  if values is None or not len(values):
    return "pending"
  if len(values) == 1:
    return f"{100 * values[0]:.1f}"
  i = stats.seed_mean(values).interval()
  return f"{100 * i.estimate:.1f} [{100 * i.low:.1f}, {100 * i.high:.1f}]"


def p_values(values: list[float]) -> str:
  return ", ".join(f"{p:.2g}" for p in values)
