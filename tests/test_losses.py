"""Losses against float64 numpy and hand-computed values."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from uat_jax import losses


def np_log_softmax(z):
  z = np.asarray(z, np.float64)
  m = z.max(-1, keepdims=True)
  return z - m - np.log(np.exp(z - m).sum(-1, keepdims=True))


def np_entropy(z):
  lp = np_log_softmax(z)
  return -(np.exp(lp) * lp).sum(-1)


def np_ce(z, y, alpha=0.0):
  k = z.shape[-1]
  t = (1 - alpha) * np.eye(k)[y] + alpha / k
  return -(t * np_log_softmax(z)).sum(-1)


def cfg(method, beta=0.5, alpha=0.2, on="adversarial"):
  return ml_collections.ConfigDict(dict(method=method, regularizer=dict(beta=beta, alpha=alpha,
                                                                        on=on)))


def smoothed_ce(z, y, alpha):
  """The library's per-example label-smoothed CE (the LS objective)."""
  return losses.per_example_objective(cfg("ls", alpha=alpha))(z, y)


def entm_ce(z, y, beta):
  """The library's per-example EntM loss CE - beta H."""
  return losses.per_example_objective(cfg("entm", beta=beta))(z, y)


def test_hand_computed_values():
  # Uniform logits over K = 4: H = CE = log 4; LS changes nothing.
  z, y = jnp.zeros((1, 4)), jnp.array([2])
  np.testing.assert_allclose(losses.entropy(z), [np.log(4)], rtol=1e-6)
  np.testing.assert_allclose(losses.cross_entropy(z, y), [np.log(4)], rtol=1e-6)
  np.testing.assert_allclose(smoothed_ce(z, y, 0.3), [np.log(4)], rtol=1e-6)
  # p = (2/3, 1/3): H = log 3 - (2/3) log 2, CE(y=0) = log(3/2).
  z, y = jnp.array([[np.log(2.0), 0.0]]), jnp.array([0])
  h = np.log(3) - 2 / 3 * np.log(2)
  np.testing.assert_allclose(losses.entropy(z), [h], rtol=1e-6)
  np.testing.assert_allclose(losses.cross_entropy(z, y), [np.log(1.5)], rtol=1e-6)
  # LS alpha = 0.5, K = 2: targets (0.75, 0.25): 0.75 log(3/2) + 0.25 log 3.
  np.testing.assert_allclose(smoothed_ce(z, y, 0.5),
                             [0.75 * np.log(1.5) + 0.25 * np.log(3)], rtol=1e-6)
  np.testing.assert_allclose(entm_ce(z, y, 2.0), [np.log(1.5) - 2 * h], rtol=1e-6)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2 ** 31 - 1), scale=st.sampled_from([0.1, 3, 30]),
       alpha=st.floats(0, 0.95), beta=st.floats(0, 3))
def test_losses_match_float64(seed, scale, alpha, beta):
  # Values vary at one shape (8 examples, K = 10 classes): no recompilation per example.
  # float32 against float64 on the same logits: a log-sum-exp of 10 terms of size <= ~150
  # (scale 30, 5 sigma) is off by about K u32 max|z| <= 1.1e-4 absolute, far inside
  # rtol 1e-4 of losses of that size; small losses (scale 0.1) meet atol 1e-5 with room.
  k = 10
  rng = np.random.default_rng(seed)
  z = rng.normal(size=(8, k)) * scale
  y = rng.integers(0, k, 8)
  zj, yj = jnp.asarray(z, jnp.float32), jnp.asarray(y)
  np.testing.assert_allclose(losses.entropy(zj), np_entropy(z), rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(losses.cross_entropy(zj, yj), np_ce(z, y), rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(smoothed_ce(zj, yj, alpha), np_ce(z, y, alpha),
                             rtol=1e-4, atol=1e-5)
  # The training objectives on the same outputs are exactly EntM and label-smoothed CE.
  entm, _ = losses.objective(cfg("at_entm", beta=beta))(zj, yj)
  np.testing.assert_allclose(entm, np.mean(np_ce(z, y) - beta * np_entropy(z)), rtol=1e-4,
                             atol=1e-5)
  ls, _ = losses.objective(cfg("ls", alpha=alpha))(zj, yj)
  np.testing.assert_allclose(ls, np.mean(np_ce(z, y, alpha)), rtol=1e-4, atol=1e-5)
  plain, _ = losses.objective(cfg("at"))(zj, yj)
  np.testing.assert_allclose(plain, np.mean(np_ce(z, y)), rtol=1e-4, atol=1e-5)
  # The library's LS loss has gradient softmax(z) - t with the smoothed targets t (which sum to
  # one exactly when this gradient sums to zero over the classes).
  t = (1 - alpha) * np.eye(k)[y] + alpha / k
  g = jax.grad(lambda v: smoothed_ce(v, yj, alpha).sum())(zj)
  p = np.exp(np_log_softmax(z))
  np.testing.assert_allclose(g, p - t, rtol=0, atol=1e-5)  # float32 softmax: ~K u32 = 6e-7


def test_regularizer_on_clean_and_both():
  rng = np.random.default_rng(0)
  adv, clean = rng.normal(size=(6, 5)), rng.normal(size=(6, 5))
  y = rng.integers(0, 5, 6)
  args = (jnp.asarray(adv, jnp.float32), jnp.asarray(y), jnp.asarray(clean, jnp.float32))
  ce = np_ce(adv, y)
  on_clean, m = losses.objective(cfg("at_entm", beta=0.7, on="clean"))(*args)
  np.testing.assert_allclose(on_clean, np.mean(ce - 0.7 * np_entropy(clean)), rtol=1e-5)
  both, _ = losses.objective(cfg("at_entm", beta=0.7, on="both"))(*args)
  np.testing.assert_allclose(
      both, np.mean(ce - 0.35 * (np_entropy(adv) + np_entropy(clean))), rtol=1e-5)
  ls_clean, _ = losses.objective(cfg("at_ls", alpha=0.3, on="clean"))(*args)
  np.testing.assert_allclose(
      ls_clean, np.mean(0.7 * ce - 0.3 * np_log_softmax(clean).mean(-1)), rtol=1e-5)
  np.testing.assert_allclose(m["ce"], ce.mean(), rtol=1e-5)
  np.testing.assert_allclose(m["entropy"], np_entropy(adv).mean(), rtol=1e-5)


def test_saturated_logits_stay_finite():
  z = jnp.asarray(np.random.default_rng(1).normal(size=(4, 10)) * 1e4, jnp.float32)
  y = jnp.arange(4)
  for value in (losses.entropy(z), smoothed_ce(z, y, 0.1), entm_ce(z, y, 1.0)):
    assert np.all(np.isfinite(np.asarray(value)))


def test_unknown_method_and_on():
  from uat_jax.errors import UatError
  with pytest.raises(UatError, match="unknown method"):
    losses.objective(cfg("mixup"))
  with pytest.raises(UatError, match="regularizer.on"):
    losses.objective(cfg("at_entm", on="logits"))
