"""Input-Jacobian analysis against finite differences, SVD, analytic formulas; chunking; CLI
and training-time tracking are in test_main.py / here."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests import helpers
from tests.helpers import load_config
from uat_jax import jacobian, models
from uat_jax.errors import UatError


@pytest.fixture(scope="module")
def cnn():
  model = models.SmallCNN()
  x = jax.random.uniform(jax.random.PRNGKey(0), (6, 28, 28, 1))
  variables = model.init(jax.random.PRNGKey(1), x[:1])
  return models.classifier(model, variables), np.asarray(x)


def test_jacobian_matches_central_differences_in_float64():
  proc = helpers.run_program("finite_differences")  # tests/programs/finite_differences.py
  assert "worst relative error" in proc.stdout


def test_norms_against_the_full_jacobian_and_svd(cnn):
  logits_fn, x = cnn
  for output in ("logits", "probs"):
    J = np.asarray(jacobian.input_jacobian(logits_fn, x, output), np.float64)
    assert J.shape == (6, 10, 784)
    r = jacobian.jacobian_norms(logits_fn, x, output=output, chunk_size=4, power_iters=100)
    svd = np.linalg.svd(J, compute_uv=False)
    # Our float32 norms add up to 10 x 784 terms in their own order; numpy adds the same
    # entries in float64: gamma_n = n u32 (Higham) bounds the difference, 4.7e-4 relative. The
    # spectral norm also needs 100 power iterations to converge, which they do well inside it.
    rtol = 10 * 784 * helpers.U32
    np.testing.assert_allclose(r["spectral"], svd[:, 0], rtol=rtol)
    np.testing.assert_allclose(r["fro"], np.sqrt((J ** 2).sum((1, 2))), rtol=rtol)
    np.testing.assert_allclose(r["inf"], np.abs(J).sum(2).max(1), rtol=rtol)
  # loss_grad: |d CE / d x| with the predicted labels when y is None
  y = np.asarray(jnp.argmax(logits_fn(x), -1))
  g = jax.grad(lambda v: jnp.sum(jax.nn.log_softmax(logits_fn(v))[jnp.arange(6), y]))(x)
  # Two float32 programs for the same gradient (each entry a few roundings apart), then a norm
  # of 784 terms: 2 x 784 u32.
  np.testing.assert_allclose(r["loss_grad"], np.sqrt((np.asarray(g) ** 2).sum((1, 2, 3))),
                             rtol=2 * 784 * helpers.U32)


def _mlp(params, v):
  return jnp.tanh(v.reshape(v.shape[0], -1).astype(jnp.float64) @ params[0]) @ params[1]


def test_chunked_equals_unchunked_and_a_chunk_of_one():
  # Chunks of 1, 4 and 6 examples run other batch sizes, which add their terms in other orders.
  # The chunking (padding, each example's power-iteration key from its index) does not depend on
  # the model, so a small float64 MLP (784 -> 32 -> 10, a Partial as uat_jax.load returns) stands
  # in for a CNN and compiles in a fraction of the time. In float64 its Jacobian entries round to
  # the same float32 values (1 ulp at most apart); each norm then adds 10 x 784 float32 terms,
  # which a reordering moves by at most gamma_n = n u32 of their sum (Higham), 4.7e-4 relative.
  with jax.enable_x64(True):
    x = jax.random.uniform(jax.random.PRNGKey(0), (6, 28, 28, 1))
    k1, k2 = jax.random.split(jax.random.PRNGKey(1))
    params = (jax.random.normal(k1, (784, 32), jnp.float64) / 28,
              jax.random.normal(k2, (32, 10), jnp.float64) / 6)
    logits_fn = jax.tree_util.Partial(_mlp, params)
    # 2 power iterations, far from converged: the spectral estimates then depend on each
    # example's start (another key moves them by 0.4-44%), so a start that depended on the
    # chunking would show.
    kw = dict(output="probs", power_iters=2, key=jax.random.PRNGKey(3))
    whole = jacobian.jacobian_norms(logits_fn, x, chunk_size=6, **kw)
    for chunk in (1, 4):  # 4: the last chunk is padded
      part = jacobian.jacobian_norms(logits_fn, x, chunk_size=chunk, **kw)
      for k in whole:
        np.testing.assert_allclose(part[k], whole[k], rtol=(10 * 784 + 2) * helpers.U32,
                                   err_msg=f"{k} chunk {chunk}")


def test_linear_model_jacobians_are_the_weights_and_the_softmax_formula():
  d, k = 12, 5
  w = np.asarray(jax.random.normal(jax.random.PRNGKey(0), (d, k)))
  b = np.asarray(jax.random.normal(jax.random.PRNGKey(1), (k,)))
  logits_fn = lambda v: v.reshape(v.shape[0], -1) @ w + b
  x = np.asarray(jax.random.uniform(jax.random.PRNGKey(2), (3, 2, 2, 3)))
  J = np.asarray(jacobian.input_jacobian(logits_fn, x, "logits"))
  np.testing.assert_allclose(J, np.broadcast_to(w.T, (3, k, d)), rtol=1e-6)  # no sums: exact
  # The softmax Jacobian in float32 against the formula on the same float32 probabilities:
  # sums of k = 5 products, a few u32 apart; rtol 1e-5 is ~170 u32.
  p = np.asarray(jax.nn.softmax(logits_fn(x)))
  expected = np.stack([(np.diag(pi) - np.outer(pi, pi)) @ w.T for pi in p])
  np.testing.assert_allclose(jacobian.input_jacobian(logits_fn, x, "probs"), expected,
                             rtol=1e-5, atol=1e-7)
  expected_log = np.stack([(np.eye(k) - np.outer(np.ones(k), pi)) @ w.T for pi in p])
  np.testing.assert_allclose(jacobian.input_jacobian(logits_fn, x, "log_probs"), expected_log,
                             rtol=1e-5, atol=1e-6)
  # Saturated logits (x1e4): every norm stays finite.
  r = jacobian.jacobian_norms(lambda v: 1e4 * logits_fn(v), x, output="probs")
  assert all(np.all(np.isfinite(v)) for v in r.values())


def test_random_projection_estimate_of_the_frobenius_norm(cnn):
  logits_fn, x = cnn
  exact = jacobian.jacobian_norms(logits_fn, x, norms=("fro",))["fro"]
  for m in (4, 64):
    est = np.asarray(jacobian.frobenius_estimate(logits_fn, x, num_projections=m,
                                                 key=jax.random.PRNGKey(m)))
    rel = np.abs(est / exact - 1)
    print(f"Hutchinson estimate, m={m}: mean relative error {rel.mean():.4f}, max {rel.max():.4f}")
    assert rel.mean() < np.sqrt(2 / m)  # the bound on the std of the squared norm's estimate
  assert np.abs(est / exact - 1).mean() < 0.1


def test_summaries_and_analysis_with_adversarial_points(cnn):
  logits_fn, x = cnn
  v = np.array([1.0, 2.0, 3.0, 4.0, 10.0])
  s = jacobian.summarize(v, bins=4)
  assert s["mean"] == 4.0 and s["median"] == 3.0 and s["p95"] == np.percentile(v, 95)
  assert sum(s["histogram"]["counts"]) == 5 and len(s["histogram"]["edges"]) == 5
  y = np.asarray(jnp.argmax(logits_fn(x), -1))
  r = jacobian.analyze(logits_fn, x, y, outputs=("logits",), norms=("fro",), chunk_size=4,
                       adversarial={"eps": 0.1, "steps": 3, "step_size": 0.03})
  assert set(r) == {"clean", "adversarial"}
  assert set(r["clean"]) == {"logits/fro", "loss_grad"}
  assert not np.allclose(r["clean"]["loss_grad"], r["adversarial"]["loss_grad"])
  with pytest.raises(UatError, match="unknown Jacobian output"):
    jacobian.jacobian_norms(logits_fn, x, output="softmax")
  with pytest.raises(UatError, match="unknown Jacobian norm"):
    jacobian.jacobian_norms(logits_fn, x, norms=("nuclear",))


def test_tracking_during_training_logs_jacobian_norms(tmp_path):
  import json
  from uat_jax import evaluators, train
  c = load_config("standard,runlocal")
  c.num_train_steps = 20
  c.evals.pgd.every_steps = 20
  c.evals.pgd.num_examples = 100
  c.checkpoint_every_steps = 20
  c.evals.jacobian.every_steps = 10
  c.evals.jacobian.num_examples = 8
  c.evals.jacobian.power_iters = 5
  train.train_and_evaluate(c, str(tmp_path / "w"), evaluators=evaluators.for_training(c))
  records = [json.loads(line) for line in open(tmp_path / "w" / "metrics.jsonl")]
  tracked = [r for r in records if "jacobian/logits/fro" in r]
  assert [r["step"] for r in tracked] == [10, 20]
  assert {"jacobian/probs/spectral", "jacobian/logits/inf", "jacobian/loss_grad"} <= set(tracked[0])
  assert all(np.isfinite(v) for r in tracked for v in r.values())
