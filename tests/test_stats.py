"""The study's statistics against exact answers and independent implementations: exact binomial
tails in integer arithmetic, scipy's one-sample t-test, a hand-computed Holm family, the
coverage of the intervals in simulated studies, and the plan's label thresholds."""

import math

import numpy as np
import pytest
from scipy import special
from scipy import stats as scipy_stats

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
  same = stats.paired_difference(a, a).interval()
  assert (same.estimate, same.low, same.high) == (0.0, 0.0, 0.0)
  better = stats.paired_difference(np.ones((2, 50)), np.zeros((2, 50))).interval()
  assert (better.estimate, better.low, better.high) == (1.0, 1.0, 1.0)
  one_seed = stats.paired_difference(a[:1], 1 - a[:1]).interval()
  assert (one_seed.low, one_seed.high) == (-math.inf, math.inf)  # no seed spread: no interval
  with pytest.raises(ValueError, match="in \\{0, 1\\}"):
    stats.paired_difference(np.full((1, 4), 0.5), np.zeros((1, 4)))


def test_without_an_image_part_the_interval_is_the_one_sample_t_interval_and_test():
  """Every image of a seed alike (no image part): the interval is scipy's one-sample t-interval
  over the seed means, and the p-value of "excludes 0" is its two-sided t-test's."""
  d = np.array([0.03, -0.01, 0.05, 0.02, 0.04])
  z = np.repeat(d[:, None], 7, axis=1)
  e = stats.two_way(z)
  expected = scipy_stats.ttest_1samp(d, 0.0)
  i = e.interval()
  assert (i.low, i.high) == pytest.approx(tuple(expected.confidence_interval(0.95)), rel=1e-12)
  assert e.p_value(lambda iv: iv.low > 0 or iv.high < 0) == pytest.approx(expected.pvalue,
                                                                          rel=1e-9)


def _simulated_studies(rng, studies, seeds, images, tau, image_sd=0.8, shift=-0.1):
  """Binary outcomes of paired methods: per image a difficulty (logit, shared by both methods)
  and an effect of M (heterogeneous over images), per seed a shift of each method's logits."""
  logit = rng.normal(1.0, 1.5, (studies, 1, images))
  effect = rng.normal(shift, image_sd, (studies, 1, images))
  p_m = special.expit(logit + effect + rng.normal(0, tau, (studies, seeds, 1)))
  p_b = special.expit(logit + rng.normal(0, tau, (studies, seeds, 1)))
  return (rng.random(p_m.shape) < p_m).astype(np.int8) - (rng.random(p_b.shape) < p_b)


@pytest.mark.parametrize("seeds", [3, 5])
def test_the_t_interval_covers_and_the_seed_bootstrap_did_not(seeds):
  """The plan's coverage check (v3.2): 2,000 simulated studies of 400 images at a fixed random
  state; the 95% interval must cover the true difference (a 2,000,000-draw Monte Carlo
  integral, error about 3e-4 points, against half-widths of several points) in at least 93% of
  them (the Monte Carlo error of a 95% coverage is 0.5 points); here it covers 97.6% at 3 seeds
  and 96.6% at 5. The percentile bootstrap over seeds that the plan used before covers 74.7% and
  81.5%."""
  rng = np.random.default_rng(seeds)
  tau, n = 0.15, 2_000_000
  logit, effect = rng.normal(1.0, 1.5, n), rng.normal(-0.1, 0.8, n)
  truth = float(np.mean(special.expit(logit + effect + rng.normal(0, tau, n))
                        - special.expit(logit + rng.normal(0, tau, n))))
  d = _simulated_studies(rng, 2000, seeds, 400, tau)
  grand, v = stats.grand_mean_variance(d)
  half = scipy_stats.t.isf(0.025, seeds - 1) * np.sqrt(v)
  coverage = np.mean(np.abs(grand - truth) <= half)
  assert coverage >= 0.93, coverage
  seed_means = d.mean(-1)  # [studies, seeds]
  draws = np.take_along_axis(seed_means[:, None, :].repeat(1000, 1),
                             rng.integers(0, seeds, (2000, 1000, seeds)), 2).mean(-1)
  low, high = np.percentile(draws, [2.5, 97.5], axis=1)
  assert np.mean((low <= truth) & (truth <= high)) < 0.88
  # The estimator agrees with the scalar path the report uses.
  e = stats.paired_difference(np.maximum(d[0], 0), np.maximum(-d[0], 0))
  assert (e.estimate, e.se) == pytest.approx((grand[0], np.sqrt(v[0])), rel=1e-12)


def test_holm_against_a_hand_computed_family():
  # m = 4, p = (0.01, 0.04, 0.03, 0.5): 0.01 <= 0.05/4 is decisive; 0.03 > 0.05/3 stops the
  # procedure. Adjusted: 4 x 0.01, 3 x 0.03, max(0.09, 2 x 0.04), 0.5.
  out = stats.holm([0.01, 0.04, 0.03, 0.5])
  assert [d for d, _, _ in out] == [True, False, False, False]
  assert out[0][1] == pytest.approx(1 - 0.05 / 4)
  assert [p for _, _, p in out] == pytest.approx([0.04, 0.09, 0.09, 0.5])
  assert [d for d, _, _ in stats.holm([0.001, 0.02, 0.04])] == [True, True, True]


def test_ratio_of_means_and_seed_mean():
  m = np.random.default_rng(2).random((3, 40)) + 0.1
  r = stats.log_ratio_of_means(2 * m, m).interval()
  assert (r.estimate, r.low, r.high) == pytest.approx((2.0, 2.0, 2.0), rel=1e-12)
  # Seeds alike, images not: the delta-method image part against the variance of the mean of
  # the pseudo-values b_i / mean(b) - m_i / mean(m) computed by hand.
  b = np.random.default_rng(3).random(40) + 0.5
  e = stats.log_ratio_of_means(np.stack([b, b]), np.stack([m[0], m[0]]))
  u = b / b.mean() - m[0] / m[0].mean()
  assert e.se ** 2 == pytest.approx(u.var(ddof=1) / 40, rel=1e-9)
  assert e.interval().estimate == pytest.approx(b.mean() / m[0].mean())
  s = stats.seed_mean([-0.02, -0.01, -0.03]).interval()
  expected = scipy_stats.ttest_1samp([-0.02, -0.01, -0.03], 0.0).confidence_interval(0.95)
  assert s.estimate == pytest.approx(-0.02) and (s.low, s.high) == pytest.approx(tuple(expected))


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
