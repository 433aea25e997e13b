"""The study's statistics (docs/study_plan.md): paired differences with hierarchical bootstrap
confidence intervals, the exact McNemar test (scipy's binomial test), ratios of means, and the
verdict labels.

Data come as arrays [S, N]: S seeds (independent training runs) by N test images, the images the
same for every seed and both methods. A difference between method M and baseline B pairs seed s
of M with seed s of B on the same images. The hierarchical bootstrap draws seeds with
replacement, then images with replacement within each drawn seed, so its interval reflects both
the spread between training runs and the sampling of test images.

    diff = paired_difference(correct_m, correct_b)   # Interval(estimate, low, high)
    gain_label(diff, margin=0.01)                     # "reproduced (gain)", ...
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
from scipy import stats as scipy_stats

RESAMPLES = 10_000
LEVEL = 0.95

GAIN = "reproduced (gain)"
LOSS = "not reproduced (loss)"
WITHIN = "no gain, within margin"
INCONCLUSIVE = "inconclusive"


@dataclasses.dataclass(frozen=True)
class Interval:
  """A point estimate and its two-sided confidence interval [low, high] at `level`."""
  estimate: float
  low: float
  high: float
  level: float = LEVEL

  def to_json(self) -> dict[str, float]:
    return dataclasses.asdict(self)


def _percentiles(draws: np.ndarray, level: float) -> tuple[float, float]:
  tail = 100 * (1 - level) / 2
  low, high = np.percentile(draws, [tail, 100 - tail])
  return float(low), float(high)


def _as_2d(a) -> np.ndarray:
  a = np.asarray(a, np.float64)
  return a[None] if a.ndim == 1 else a


def paired_difference(m, b, *, resamples: int = RESAMPLES, level: float = LEVEL,
                      seed: int = 0) -> Interval:
  """Mean over seeds of (mean of m - mean of b) over the images, for per-image outcomes in
  {0, 1} (correct / robust masks) shaped [S, N] (or [N] for one seed), with the hierarchical
  bootstrap interval. Per seed the per-image differences take the values -1, 0, +1, so a
  resample of N images is a multinomial draw of how many of each (exact, and cheap)."""
  m, b = _as_2d(m), _as_2d(b)
  if m.shape != b.shape:
    raise ValueError(f"paired outcomes must have one shape, got {m.shape} and {b.shape}")
  if not np.all(np.isin(m, (0, 1)) & np.isin(b, (0, 1))):
    raise ValueError("paired_difference takes per-image outcomes in {0, 1}")
  s, n = m.shape
  d = m - b
  probs = np.stack([(d == 1).mean(1), (d == -1).mean(1), (d == 0).mean(1)], axis=1)  # [S, 3]
  rng = np.random.default_rng(seed)
  draws = np.empty(resamples)
  for start in range(0, resamples, 1000):
    k = min(1000, resamples - start)
    seeds = rng.integers(0, s, size=(k, s))  # the seeds of each resample
    counts = rng.multinomial(n, probs[seeds.ravel()]).reshape(k, s, 3)
    draws[start:start + k] = ((counts[..., 0] - counts[..., 1]) / n).mean(1)
  return Interval(float(d.mean()), *_percentiles(draws, level), level)


def log_ratio_of_means(b, m, *, resamples: int = RESAMPLES, level: float = LEVEL,
                       seed: int = 0) -> Interval:
  """R = geometric mean over seeds of (mean of b) / (mean of m), for positive per-image values
  [S, N] (e.g. Jacobian norms of a baseline b and a method m on the same images), with the
  hierarchical bootstrap interval (computed on log R and returned as ratios)."""
  b, m = _as_2d(b), _as_2d(m)
  if b.shape != m.shape or not (np.all(b > 0) and np.all(m > 0)):
    raise ValueError("log_ratio_of_means takes positive values of one shape [S, N]")
  s, n = b.shape

  def log_r(bs, ms):
    return np.mean(np.log(bs.mean(-1)) - np.log(ms.mean(-1)), axis=-1)

  rng = np.random.default_rng(seed)
  draws = np.empty(resamples)
  for start in range(0, resamples, 200):
    k = min(200, resamples - start)
    seeds = rng.integers(0, s, size=(k, s))
    images = rng.integers(0, n, size=(k, s, n))
    draws[start:start + k] = log_r(b[seeds[..., None], images], m[seeds[..., None], images])
  low, high = _percentiles(draws, level)
  return Interval(float(np.exp(log_r(b, m))), math.exp(low), math.exp(high), level)


def seed_mean(values, *, resamples: int = RESAMPLES, level: float = LEVEL,
              seed: int = 0) -> Interval:
  """The mean of one number per seed, with a bootstrap interval over seeds (e.g. last minus best
  validation accuracy, per training run)."""
  v = np.asarray(values, np.float64).ravel()
  rng = np.random.default_rng(seed)
  draws = v[rng.integers(0, len(v), size=(resamples, len(v)))].mean(1)
  return Interval(float(v.mean()), *_percentiles(draws, level), level)


def mcnemar_exact(m, b) -> float:
  """Two-sided exact McNemar p-value for paired per-image outcomes of one seed: the binomial
  test of the discordant images (m right and b wrong vs m wrong and b right) against 1/2."""
  m, b = np.asarray(m, bool).ravel(), np.asarray(b, bool).ravel()
  up, down = int(np.sum(m & ~b)), int(np.sum(~m & b))
  if up + down == 0:
    return 1.0
  return float(scipy_stats.binomtest(up, up + down, 0.5).pvalue)


def gain_label(interval: Interval, margin: float) -> str:
  """The plan's label for a difference the paper claims is a gain (docs/study_plan.md)."""
  if interval.low > 0:
    return GAIN
  if interval.high < 0:
    return LOSS
  if -margin <= interval.low and interval.high <= margin:
    return WITHIN
  return INCONCLUSIVE


REDUCTION = "reproduced (reduction)"
NO_REDUCTION = "no reduction, within margin"
INCREASE = "not reproduced (increase)"


def reduction_label(ratio: Interval, margin: float = 1.25) -> str:
  """The plan's label for a ratio baseline / method that the paper claims is large (claim 3):
  a reduction if the interval's lower end exceeds `margin`; within margin if the interval lies
  in [1 / margin, margin]; an increase if its upper end is below 1; else inconclusive."""
  if ratio.low > margin:
    return REDUCTION
  if ratio.high < 1.0:
    return INCREASE
  if 1.0 / margin <= ratio.low and ratio.high <= margin:
    return NO_REDUCTION
  return INCONCLUSIVE
