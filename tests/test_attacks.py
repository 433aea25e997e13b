"""PGD: constraints, ascent, eps = 0, determinism."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from uat_jax import attacks, losses, models
from uat_jax.errors import UatError


def linear_logits_fn(seed, d, k=10):
  w = jax.random.normal(jax.random.PRNGKey(seed), (d, k))
  return lambda x: x.reshape(x.shape[0], -1) @ w


# Property tests draw values (seeds, eps, step sizes, logit scales) at one fixed shape and step
# count, through jitted programs that take them as arguments and run every structural choice
# (norm, loss, restarts): each program compiles once, not once per example or choice.
B, HW, C, D, K = 4, 5, 3, 75, 10


def _linear(w, scale, v):
  return scale * (v.reshape(v.shape[0], -1) @ w)


def _inputs(seed):
  key = jax.random.PRNGKey(seed)
  x = jax.random.uniform(key, (B, HW, HW, C))
  x = x.at[0].set(jnp.round(x[0]))  # pixels exactly at 0 and 1
  w = jax.random.normal(jax.random.fold_in(key, 2), (D, K))
  y = jax.random.randint(key, (B,), 0, K)
  return x, y, w, jax.random.fold_in(key, 1)


LOSSES = ("ce", "cw", "dlr")
CHOICES = [(norm, loss, restarts) for norm in ("linf", "l2") for loss in LOSSES
           for restarts in (1, 2)]


@jax.jit
def _pgd_and_fgsm(seed, eps, step_size, scale):
  x, y, w, key = _inputs(seed)
  logits_fn = functools.partial(_linear, w, scale)
  return x, {c: attacks.pgd(logits_fn, x, y, key=key, eps=eps, step_size=step_size, steps=3,
                            norm=c[0], loss=c[1], restarts=c[2]) for c in CHOICES}, {
      loss: attacks.fgsm(logits_fn, x, y, eps=eps, loss=loss) for loss in LOSSES}


def assert_in_ball(out, x, eps, norm="linf"):
  """In [0, 1] and in the eps-ball. x + eps rounds to float32 (half an ulp of a number <= 2,
  1.2e-7): 1e-6 bounds it. An L2 norm of 75 float32 terms is off by at most 75 u32 = 4.5e-6
  relative: 1e-5 bounds it."""
  out, x = np.asarray(out), np.asarray(x)
  assert np.all(np.isfinite(out))
  assert out.min() >= 0.0 and out.max() <= 1.0
  if norm == "linf":
    assert np.all(np.abs(out - x) <= eps + 1e-6)
  else:
    assert np.all(np.sqrt(((out - x) ** 2).reshape(len(x), -1).sum(-1)) <= eps * (1 + 1e-5) + 1e-6)


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 10_000), eps=st.floats(0.0, 1.0), step_frac=st.floats(0.0, 2.0),
       scale=st.sampled_from([1.0, 1e4]))
def test_attacks_stay_in_eps_ball_and_unit_box(seed, eps, step_frac, scale):
  x, pgd, fgsm = _pgd_and_fgsm(seed, eps, step_frac * eps, scale)
  for (norm, _, _), x_adv in pgd.items():
    assert_in_ball(x_adv, x, eps, norm)
  for x_fgsm in fgsm.values():
    assert_in_ball(x_fgsm, x, eps)


@pytest.fixture(scope="module")
def cnn():
  model = models.SmallCNN()
  x = jax.random.uniform(jax.random.PRNGKey(0), (32, 28, 28, 1))
  params = model.init(jax.random.PRNGKey(1), x)
  y = jnp.argmax(model.apply(params, x), -1)  # attack the model's own predictions
  return (lambda v: model.apply(params, v)), x, y


def test_loss_after_pgd_is_at_least_loss_at_random_start(cnn):
  logits_fn, x, y = cnn
  kw = dict(key=jax.random.PRNGKey(3), eps=0.1, step_size=0.025)
  start = attacks.pgd(logits_fn, x, y, steps=0, **kw)  # the random start alone
  end = attacks.pgd(logits_fn, x, y, steps=10, **kw)
  l0 = losses.cross_entropy(logits_fn(start), y)
  l1 = losses.cross_entropy(logits_fn(end), y)
  assert np.all(np.asarray(l1) >= np.asarray(l0) - 1e-6)
  assert float(l1.mean()) > float(l0.mean())


def test_eps_zero_gives_clean_accuracy(cnn):
  logits_fn, x, y = cnn
  y = y.at[:8].set((y[:8] + 1) % 10)  # some wrong labels, so clean accuracy is not trivial
  x_adv = attacks.pgd(logits_fn, x, y, key=jax.random.PRNGKey(0), eps=0.0, step_size=0.01,
                      steps=5)
  np.testing.assert_array_equal(x_adv, x)
  assert losses.accuracy(logits_fn(x_adv), y).mean() == losses.accuracy(logits_fn(x), y).mean()


def test_pgd_deterministic_in_key_and_unroll_invariant():
  # Rolled and unrolled loops may fuse and order the gradient's sums differently. In float64 a
  # sign of the input gradient can only flip within ~1e-16 of zero, so the three loops take the
  # same steps; in float32 a near-zero gradient could flip and move a pixel by 2 step sizes.
  model = models.SmallCNN(dtype=jnp.float64)
  with jax.enable_x64(True):
    x = jax.random.uniform(jax.random.PRNGKey(0), (16, 28, 28, 1), jnp.float32)
    params = model.init(jax.random.PRNGKey(1), x)
    logits_fn = lambda v: model.apply(params, v)
    y = jnp.argmax(logits_fn(x), -1)
    kw = dict(eps=0.1, step_size=0.02, steps=4)
    run = lambda unroll, seed: jax.jit(lambda k: attacks.pgd(logits_fn, x, y, key=k,
                                                             unroll=unroll, **kw))(
        jax.random.PRNGKey(seed))
    a, b, full, c = run(1, 5), run(4, 5), run(True, 5), run(1, 6)
  # Equal steps; x + step rounds to float32 the same way (1e-6 bounds a few ulps of 1).
  np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)
  np.testing.assert_allclose(a, full, rtol=0, atol=1e-6)
  assert not np.allclose(a, c)


def test_pgd_lowers_accuracy_and_takes_a_custom_loss(cnn):
  logits_fn, x, y = cnn
  kw = dict(key=jax.random.PRNGKey(0), eps=0.3, step_size=0.05, steps=10)
  x_adv = attacks.pgd(logits_fn, x, y, **kw)
  assert float(losses.accuracy(logits_fn(x_adv), y).mean()) < 0.5
  margin = lambda z, t: jnp.max(z - 1e9 * jax.nn.one_hot(t, 10), -1) - jnp.take_along_axis(
      z, t[:, None], -1)[:, 0]
  x_cw = attacks.pgd(logits_fn, x, y, loss=margin, **kw)
  assert float(losses.accuracy(logits_fn(x_cw), y).mean()) < 0.5


def test_bad_arguments():
  f = linear_logits_fn(0, 4)
  x, y = jnp.zeros((1, 2, 2, 1)), jnp.zeros((1,), jnp.int32)
  with pytest.raises(UatError, match="outside \\[0, 1\\]"):
    attacks.pgd(f, x, y, key=jax.random.PRNGKey(0), eps=-0.1, step_size=0.1, steps=1)
  with pytest.raises(UatError, match="outside \\[0, 1\\]"):
    attacks.pgd(f, x, y, key=jax.random.PRNGKey(0), eps=8, step_size=0.1, steps=1)
  with pytest.raises(UatError, match="unknown attack loss"):
    attacks.pgd(f, x, y, key=jax.random.PRNGKey(0), eps=0.1, step_size=0.1, steps=1, loss="foo")
  with pytest.raises(UatError, match="unknown norm"):
    attacks.pgd(f, x, y, key=jax.random.PRNGKey(0), eps=0.1, step_size=0.1, steps=1, norm="l1")


def test_margin_and_dlr_losses_against_numpy():
  z = np.array([[3.0, 1.0, 2.0, -1.0], [0.5, 4.0, 1.0, 0.0]], np.float32)
  y = np.array([0, 2])
  np.testing.assert_allclose(attacks.margin_loss(jnp.asarray(z), jnp.asarray(y)), [-1.0, 3.0])
  # DLR: margin / (z_pi1 - z_pi3): (2 - 3) / (3 - 1) and (4 - 1) / (4 - 0.5)
  np.testing.assert_allclose(attacks.dlr_loss(jnp.asarray(z), jnp.asarray(y)),
                             [-0.5, 3 / 3.5], rtol=1e-6)
  # Shift and scale invariance of DLR (why it breaks saturated softmaxes).
  np.testing.assert_allclose(attacks.dlr_loss(jnp.asarray(1e4 * z + 7), jnp.asarray(y)),
                             [-0.5, 3 / 3.5], rtol=1e-5)


def test_restarts_never_do_worse_and_l2_attacks_work(cnn):
  logits_fn, x, y = cnn
  kw = dict(key=jax.random.PRNGKey(2), eps=0.05, step_size=0.0125, steps=5)
  acc = lambda xa: float(losses.accuracy(logits_fn(xa), y).mean())
  one = attacks.pgd(logits_fn, x, y, restarts=1, **kw)
  three = attacks.pgd(logits_fn, x, y, restarts=3, **kw)
  assert acc(three) <= acc(one)
  fooled_one = np.asarray(losses.accuracy(logits_fn(one), y)) == 0
  fooled_three = np.asarray(losses.accuracy(logits_fn(three), y)) == 0
  assert np.all(fooled_three[fooled_one])  # an example fooled once stays fooled
  l2 = attacks.pgd(logits_fn, x, y, key=jax.random.PRNGKey(0), eps=3.0, step_size=0.5, steps=10,
                   norm="l2")
  assert acc(l2) < acc(x)


def test_fgsm_is_one_signed_step(cnn):
  logits_fn, x, y = cnn
  g = jax.grad(lambda v: losses.cross_entropy(logits_fn(v), y).sum())(x)
  expected = np.clip(np.asarray(x) + 0.1 * np.sign(np.asarray(g)), 0, 1)
  np.testing.assert_allclose(attacks.fgsm(logits_fn, x, y, eps=0.1), expected, atol=1e-6)


@jax.jit
def _score_and_auto_attacks(seed, eps, scale):
  x, y, w, key = _inputs(seed)
  logits_fn = functools.partial(_linear, w, scale)
  surrogate = functools.partial(_linear, jax.random.normal(jax.random.fold_in(key, 3), (D, K)),
                                1.0)
  return x, [
      *(attacks.apgd(logits_fn, x, y, key=key, eps=eps, steps=2, loss=loss, restarts=2)
        for loss in ("ce", "dlr")),
      attacks.apgd_targeted(logits_fn, x, y, key=key, eps=eps, steps=2, num_targets=2),
      attacks.square(logits_fn, x, y, key=key, eps=eps, queries=5),
      attacks.spsa(logits_fn, x, y, key=key, eps=eps, steps=2, samples=4, sample_batch=3),
      attacks.transfer(surrogate, x, y, key=key, eps=eps, steps=2),
      attacks.fab_targeted(logits_fn, x, y, key=key, eps=eps, steps=2, num_targets=2,
                           restarts=2),
  ], attacks.apgd(logits_fn, x, y, key=key, eps=3 * eps, steps=2, norm="l2")


@settings(max_examples=5, deadline=None)
@given(seed=st.integers(0, 10_000), eps=st.floats(0.0, 1.0), scale=st.sampled_from([1.0, 1e4]))
def test_gradient_free_and_auto_attacks_stay_in_eps_ball_and_unit_box(seed, eps, scale):
  x, outs, l2 = _score_and_auto_attacks(seed, eps, scale)
  for out in outs:
    assert_in_ball(out, x, eps)
  assert_in_ball(l2, x, 3 * eps, "l2")


def test_apgd_checkpoints_match_the_paper():
  # p_j = 0, 0.22, 0.41, 0.57, 0.70, 0.80, 0.87, 0.93, 0.99 of the iterations (Croce & Hein 2020)
  assert [c for c, _ in attacks.apgd_checkpoints(100)] == [22, 41, 57, 70, 80, 87, 93, 99]


def test_targeted_dlr_and_temperature_against_numpy():
  z = np.array([[3.0, 1.0, 2.0, -1.0, 0.0]], np.float32)
  y, t = np.array([0]), np.array([2])
  # -(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2) = -(3 - 2) / (3 - (1 + 0) / 2)
  np.testing.assert_allclose(attacks.targeted_dlr_loss(jnp.asarray(z), jnp.asarray(y),
                                                       jnp.asarray(t)), [-1 / 2.5], rtol=1e-6)
  scaled = attacks.temperature_scaled("ce", 0.5)(jnp.asarray(z), jnp.asarray(y))
  np.testing.assert_allclose(scaled, losses.cross_entropy(jnp.asarray(2 * z), jnp.asarray(y)),
                             rtol=1e-6)
  with pytest.raises(UatError, match="temperature"):
    attacks.temperature_scaled("ce", 0.0)


def test_new_attacks_are_deterministic_in_their_key(cnn):
  logits_fn, x, y = cnn
  x, y = x[:8], y[:8]
  # Each attack jitted with the key as its argument: one program, run for three keys (called
  # eagerly, each call would trace and compile its loops again).
  for fn in (lambda k: attacks.apgd(logits_fn, x, y, key=k, eps=0.1, steps=3),
             lambda k: attacks.square(logits_fn, x, y, key=k, eps=0.1, queries=5),
             lambda k: attacks.spsa(logits_fn, x, y, key=k, eps=0.1, steps=2, samples=4)):
    program = jax.jit(fn)
    a, b, c = (np.asarray(program(jax.random.PRNGKey(s))) for s in (1, 1, 2))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
  with pytest.raises(UatError, match="APGD-T needs"):
    attacks.apgd_targeted(logits_fn, x, y, key=jax.random.PRNGKey(0), eps=0.1, num_targets=10)


def test_fab_finds_the_minimal_linf_perturbation_of_a_linear_classifier():
  """For logits z = W x + b, the smallest L-inf perturbation making class t beat y is
  (z_y - z_t) / |w_y - w_t|_1 (away from the [0, 1] box): FAB must land within a few percent of
  the minimum over targets, never below it, and FAB-T at eps must break exactly the points whose
  minimal distance is below eps."""
  rng = np.random.default_rng(0)
  d, k, b = 49, 10, 32
  w = (0.3 * rng.normal(size=(d, k))).astype(np.float32)
  bias = rng.normal(size=k).astype(np.float32)
  logits_fn = lambda v: v.reshape(v.shape[0], -1) @ w + bias
  x = (0.5 + rng.uniform(-0.1, 0.1, (b, 7, 7, 1))).astype(np.float32)
  z = np.asarray(logits_fn(x))
  y = z.argmax(-1).astype(np.int32)
  other = np.arange(k)[None] != y[:, None]
  norms = np.where(other, np.abs(w[:, y].T[:, None] - w.T[None]).sum(-1), 1.0)
  analytic = np.where(other, (z[np.arange(b), y][:, None] - z) / norms, np.inf).min(-1)
  assert analytic.max() < 0.35  # the box [0, 1] never binds: x +- 0.35 stays inside
  order = np.argsort(-z, -1)
  fab = jax.jit(lambda v, t, tg: attacks.fab_minimal(logits_fn, v, t, tg,
                                                     key=jax.random.PRNGKey(0), steps=100))
  found = np.full(b, np.inf)
  for j in range(1, k):
    xa = np.asarray(fab(x, y, order[:, j].astype(np.int32)))
    fooled = np.asarray(logits_fn(xa)).argmax(-1) != y
    found = np.minimum(found, np.where(fooled, np.abs(xa - x).reshape(b, -1).max(1), np.inf))
  ratio = found / analytic
  # float32 logits: the boundary is located to ~1e-6 relative, far inside the 1e-4 margin.
  assert ratio.min() >= 1 - 1e-4 and ratio.max() <= 1.03, ratio
  eps = float(np.median(analytic))
  xa = attacks.fab_targeted(logits_fn, x, y, key=jax.random.PRNGKey(0), eps=eps,
                            num_targets=k - 1)
  assert np.abs(np.asarray(xa) - x).max() <= eps + 1e-6
  fooled = np.asarray(logits_fn(xa)).argmax(-1) != y
  # Points within 3% of the eps boundary may go either way; all others are decided.
  clear = np.abs(analytic / eps - 1) > 0.03
  np.testing.assert_array_equal(fooled[clear], (analytic <= eps)[clear])


def test_labels_given_as_a_list_are_converted_or_refused_in_one_line():
  x = np.random.default_rng(0).random((4, 4, 4, 1)).astype(np.float32)
  logits_fn = lambda v: v.reshape(v.shape[0], -1)[:, :10] * 3.0  # noqa: E731
  key = jax.random.PRNGKey(0)
  as_list = attacks.pgd(logits_fn, x, [0, 1, 2, 3], key=key, eps=0.1, step_size=0.02, steps=2)
  as_array = attacks.pgd(logits_fn, x, np.arange(4), key=key, eps=0.1, step_size=0.02, steps=2)
  np.testing.assert_array_equal(as_list, as_array)
  np.testing.assert_array_equal(attacks.fgsm(logits_fn, x, [0, 1, 2, 3], eps=0.1),
                                attacks.fgsm(logits_fn, x, np.arange(4), eps=0.1))
  with pytest.raises(UatError, match=r"labels must be 4 integers \(one per image\), got dtype "
                                     r"float64"):
    attacks.pgd(logits_fn, x, [0.5, 1, 2, 3], key=key, eps=0.1, step_size=0.02, steps=2)
