"""The study's statistics (docs/study_plan.md, v3.2): paired differences and ratios with
Student-t intervals that carry both the spread between training runs and the sampling of test
images, the Holm procedure over the labelled comparisons, the exact McNemar test (scipy's
binomial test), and the verdict labels.

Data come as arrays [S, N]: S seeds (independent training runs) by N test images, the images the
same for every seed and both methods. A difference between method M and baseline B pairs seed s
of M with seed s of B on the same images. The estimand is the expected difference over training
runs and over test images; the images are shared by every seed, so their sampling error does not
average out over seeds, and the variance of the grand mean has a seed part and an image part,
estimated without bias by a two-way random-effects analysis of variance. With one seed there is
no interval (its ends are infinite).

    diff = paired_difference(correct_m, correct_b)   # Estimate(estimate, se, df)
    diff.interval()                                   # Interval(estimate, low, high) at 95%
    gain_label(diff.interval(), margin=0.01)          # "reproduced (gain)", ...
    holm([diff.p_value(lambda i: gain_label(i, 0.01) != INCONCLUSIVE), ...])
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable, Sequence

import numpy as np
from scipy import stats as scipy_stats

LEVEL = 0.95
ALPHA = 0.05  # the family-wise error rate of the Holm procedure

GAIN = "reproduced (gain)"
LOSS = "not reproduced (loss)"
WITHIN = "no gain, within margin"
INCONCLUSIVE = "inconclusive"


@dataclasses.dataclass(frozen=True)
class Interval:
  """A point estimate and its two-sided confidence interval [low, high] at `level` (infinite
  ends: no interval, e.g. from one seed)."""
  estimate: float
  low: float
  high: float
  level: float = LEVEL

  def to_json(self) -> dict[str, float]:
    return dataclasses.asdict(self)


def _exp(v: float) -> float:
  return math.inf if v > 700.0 else math.exp(v)  # exp(710) overflows a float


@dataclasses.dataclass(frozen=True)
class Estimate:
  """An estimate with a Student-t sampling distribution: standard error `se` and `df` degrees
  of freedom (0: unknown, one seed). `log`: estimated on the log scale, reported as a ratio."""
  estimate: float
  se: float
  df: float
  log: bool = False

  def interval(self, level: float = LEVEL) -> Interval:
    return self.interval_at(1.0 - level)

  def interval_at(self, alpha: float) -> Interval:
    """The two-sided (1 - alpha) interval; alpha rather than the level, so that levels within
    1e-16 of 1 (p-values below it) stay representable."""
    if self.df <= 0 or alpha <= 0:
      low, high = -math.inf, math.inf
    else:
      half = float(scipy_stats.t.isf(alpha / 2, self.df)) * self.se if self.se else 0.0
      low, high = self.estimate - half, self.estimate + half
    if self.log:
      return Interval(_exp(self.estimate), _exp(low), _exp(high), 1.0 - alpha)
    return Interval(self.estimate, low, high, 1.0 - alpha)

  def p_value(self, decisive: Callable[[Interval], bool]) -> float:
    """The smallest alpha at which the two-sided (1 - alpha) interval is decisive (1 if it
    never is): the p-value of the test behind a label read off the interval. Intervals shrink
    as alpha grows, and every label of the plan stays decisive inside a decisive interval, so
    the set of such alpha is an interval (alpha*, 1], found by bisection on log alpha."""
    if not decisive(self.interval_at(1.0)):
      return 1.0
    if decisive(self.interval_at(1e-300)):
      return 1e-300
    lo, hi = -300.0, 0.0  # log10 alpha: not decisive at lo, decisive at hi
    for _ in range(60):
      mid = (lo + hi) / 2
      if decisive(self.interval_at(10.0 ** mid)):
        hi = mid
      else:
        lo = mid
    return 10.0 ** hi


def grand_mean_variance(z) -> tuple[np.ndarray, np.ndarray]:
  """The grand mean of per-(seed, image) values z [..., S, N] and its estimated variance
  V = s_seed^2 / S + max(0, s_image^2 - MSE / S) / N: the seed means' sample variance, and the
  image means' sample variance less its residual part (MSE, the residual mean square of the
  two-way random-effects analysis of variance without replication), each an unbiased estimate
  of its component. Vectorized over leading axes; S >= 2."""
  z = np.asarray(z, np.float64)
  s, n = z.shape[-2:]
  grand = z.mean((-2, -1))
  seed_means, image_means = z.mean(-1), z.mean(-2)
  v = seed_means.var(-1, ddof=1) / s
  if n > 1:
    resid = z - seed_means[..., :, None] - image_means[..., None, :] + grand[..., None, None]
    mse = (resid ** 2).sum((-2, -1)) / ((s - 1) * (n - 1))
    v = v + np.maximum(0.0, image_means.var(-1, ddof=1) - mse / s) / n
  return grand, v


def two_way(z) -> Estimate:
  """The grand mean of per-(seed, image) values z [S, N] with its t sampling distribution: the
  variance of grand_mean_variance, with S - 1 degrees of freedom, those of the seed part,
  conservative for the sum (Welch-Satterthwaite's larger ones covered 93.1% instead of 95% at 3
  seeds in the coverage simulation of tests/test_stats.py). One seed: no interval."""
  z = _as_2d(z)
  if z.shape[0] < 2:
    return Estimate(float(z.mean()), math.inf, 0.0)
  grand, v = grand_mean_variance(z)
  if v == 0.0:
    return Estimate(float(grand), 0.0, math.inf)
  return Estimate(float(grand), math.sqrt(float(v)), float(z.shape[0] - 1))


def _as_2d(a) -> np.ndarray:
  a = np.asarray(a, np.float64)
  return a[None] if a.ndim == 1 else a


def paired_difference(m, b) -> Estimate:
  """Mean over seeds and images of M's per-image outcome minus B's, for outcomes in {0, 1}
  (correct / robust masks) shaped [S, N] (or [N] for one seed)."""
  m, b = _as_2d(m), _as_2d(b)
  if m.shape != b.shape:
    raise ValueError(f"paired outcomes must have one shape, got {m.shape} and {b.shape}")
  if not np.all(np.isin(m, (0, 1)) & np.isin(b, (0, 1))):
    raise ValueError("paired_difference takes per-image outcomes in {0, 1}")
  return two_way(m - b)


def log_ratio_of_means(b, m) -> Estimate:
  """log R, R = geometric mean over seeds of (mean of b) / (mean of m), for positive per-image
  values [S, N] (Jacobian norms of a baseline b and a method m on the same images); its
  interval() is the ratio's. The image part of the variance comes from each image's influence
  on a seed's log ratio (delta method): the pseudo-values log R_s + b_si / mean b_s -
  m_si / mean m_s, whose mean over images is log R_s."""
  b, m = _as_2d(b), _as_2d(m)
  if b.shape != m.shape or not (np.all(b > 0) and np.all(m > 0)):
    raise ValueError("log_ratio_of_means takes positive values of one shape [S, N]")
  mb, mm = b.mean(1, keepdims=True), m.mean(1, keepdims=True)
  pseudo = np.log(mb) - np.log(mm) + b / mb - m / mm
  return dataclasses.replace(two_way(pseudo), log=True)


def seed_mean(values) -> Estimate:
  """The mean of one number per seed (e.g. a run's drop of validation accuracy) with the
  t-interval over seeds: two_way with one value per seed."""
  return two_way(np.asarray(values, np.float64).reshape(-1, 1))


def holm(p_values: Sequence[float], alpha: float = ALPHA) -> list[tuple[bool, float, float]]:
  """Holm's step-down procedure over a family of p-values: per comparison (decisive, level,
  adjusted p). The j-th smallest p is decisive if it and every smaller one are at most
  alpha / (m - j + 1); a decisive comparison's label is read off its interval at level
  1 - alpha / (m - j + 1). Adjusted p: max over i <= j of min(1, (m - i + 1) p_(i))."""
  m = len(p_values)
  order = sorted(range(m), key=lambda k: p_values[k])
  out: list[tuple[bool, float, float]] = [(False, 1.0 - alpha, 1.0)] * m
  still, running = True, 0.0
  for j, k in enumerate(order):
    threshold = alpha / (m - j)
    still = still and p_values[k] <= threshold
    running = max(running, min(1.0, (m - j) * p_values[k]))
    out[k] = (still, 1.0 - threshold, running)
  return out


def mcnemar_exact(m, b) -> float:
  """Two-sided exact McNemar p-value for paired per-image outcomes of one seed: the binomial
  test of the discordant images (m right and b wrong vs m wrong and b right) against 1/2. It
  asks whether two trained networks differ on these images, not whether two methods do."""
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
