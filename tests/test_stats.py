"""The study's statistics against exact answers: enumerated bootstrap distributions, exact
binomial tails in integer arithmetic, and the plan's label thresholds."""

import itertools
import math

import numpy as np
import pytest

from uat_jax import stats


def test_mcnemar_is_the_exact_two_sided_binomial_tail_of_the_discordant_images():
  """Against the tail summed in exact integers: p = min(1, 2 sum_{k <= min(up, down)} C(n, k)
  / 2^n), rounded once at the division."""
  rng = np.random.default_rng(0)
  for up, down, same in ((0, 0, 10), (3, 0, 50), (7, 19, 200), (40, 45, 1000), (1, 300, 5)):
    m = np.array([1] * up + [0] * down + [1] * same, bool)
    b = np.array([0] * up + [1] * down + [1] * same, bool)
    perm = rng.permutation(len(m))
    n = up + down
    tail = sum(math.comb(n, k) for k in range(min(up, down) + 1))
    expected = 1.0 if n == 0 else min(1.0, 2 * tail / 2 ** n)
    assert math.isclose(stats.mcnemar_exact(m[perm], b[perm]), expected, rel_tol=1e-9)


def test_paired_difference_of_equal_and_shifted_outcomes():
  a = np.random.default_rng(1).random((3, 500)) < 0.7
  same = stats.paired_difference(a, a, resamples=2000)
  assert (same.estimate, same.low, same.high) == (0.0, 0.0, 0.0)
  better = stats.paired_difference(np.ones((2, 50)), np.zeros((2, 50)), resamples=2000)
  assert (better.estimate, better.low, better.high) == (1.0, 1.0, 1.0)
  with pytest.raises(ValueError, match="in \\{0, 1\\}"):
    stats.paired_difference(np.full((1, 4), 0.5), np.zeros((1, 4)))


def test_the_seed_level_of_the_bootstrap_is_exact():
  # Seed A: every image +1; seed B: every image 0. Drawing 2 seeds with replacement gives a mean
  # difference of 1 (AA, p 1/4), 1/2 (AB or BA, p 1/2) or 0 (BB, p 1/4), whatever images are
  # drawn: the 95% interval is [0, 1] around the estimate 1/2.
  m = np.array([np.ones(100), np.zeros(100)])
  r = stats.paired_difference(m, np.zeros((2, 100)), resamples=4000)
  assert (r.estimate, r.low, r.high) == (0.5, 0.0, 1.0)


def test_the_image_level_of_the_bootstrap_matches_the_enumerated_distribution():
  # One seed, 6 images with differences (+1, +1, +1, 0, 0, -1): enumerate every resample of 6
  # images (6^6, equally likely) for the exact distribution of the mean difference.
  d = np.array([1, 1, 1, 0, 0, -1])
  means = np.array([d[list(i)].mean() for i in itertools.product(range(6), repeat=6)])
  values, counts = np.unique(means, return_counts=True)
  cdf = np.cumsum(counts) / counts.sum()
  low, high = values[np.searchsorted(cdf, 0.025)], values[np.searchsorted(cdf, 0.975)]
  # The exact CDF is nowhere within 0.005 of 0.025 or 0.975, five times the sampling error of
  # the empirical CDF there with 20,000 resamples (sqrt(0.025 * 0.975 / 20000) = 0.0011), so the
  # bootstrap's percentiles land on the exact quantiles' support points.
  assert np.min(np.abs(cdf - 0.025)) > 0.005 and np.min(np.abs(cdf - 0.975)) > 0.005
  m, b = (d == 1).astype(float), (d == -1).astype(float)
  r = stats.paired_difference(m, b, resamples=20_000)
  assert r.estimate == pytest.approx(d.mean()) and (r.low, r.high) == (low, high)


def test_ratio_of_means_and_seed_mean():
  m = np.random.default_rng(2).random((3, 40)) + 0.1
  r = stats.log_ratio_of_means(2 * m, m, resamples=500)
  assert (r.estimate, r.low, r.high) == pytest.approx((2.0, 2.0, 2.0), rel=1e-12)
  s = stats.seed_mean([-0.02, -0.01, -0.03], resamples=2000)
  assert s.estimate == pytest.approx(-0.02) and -0.03 <= s.low <= s.estimate <= s.high <= -0.01


def test_labels_follow_the_plans_thresholds():
  iv = lambda low, high: stats.Interval((low + high) / 2, low, high)
  assert stats.gain_label(iv(0.001, 0.05), 0.01) == stats.GAIN
  assert stats.gain_label(iv(-0.05, -0.001), 0.01) == stats.LOSS
  assert stats.gain_label(iv(-0.008, 0.009), 0.01) == stats.WITHIN
  assert stats.gain_label(iv(-0.02, 0.009), 0.01) == stats.INCONCLUSIVE
  assert stats.reduction_label(iv(1.3, 9.0)) == stats.REDUCTION
  assert stats.reduction_label(iv(0.85, 1.2)) == stats.NO_REDUCTION
  assert stats.reduction_label(iv(0.5, 0.97)) == stats.INCREASE
  assert stats.reduction_label(iv(0.9, 2.0)) == stats.INCONCLUSIVE
