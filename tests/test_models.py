"""Models: shapes, normalization inside the model, pooling, batch norm."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from tests import helpers
from uat_jax import data, models
from uat_jax.errors import UatError


def build(name, dataset="fashion_mnist", dtype=jnp.float32, **kw):
  c = ml_collections.ConfigDict(dict(name=name, normalize=True, depth=10, width=1))
  c.update(kw)
  return models.create_model(c, data.get_spec(dataset), dtype=dtype)


@pytest.mark.parametrize("name,dataset,params", [  # Madry CNN and PreAct ResNet-18 (with
    ("small_cnn", "fashion_mnist", 206_922),          # the configs that use them):
    ("wide_resnet", "cifar100", None),                 # tests/programs/every_config.py
])
def test_shapes_and_sizes(name, dataset, params):
  model = build(name, dataset)
  spec = data.get_spec(dataset)
  x = jnp.zeros((2, *spec.shape))
  variables = jax.jit(lambda: model.init(jax.random.PRNGKey(0), x, train=False))()
  logits = jax.jit(lambda v: model.apply(v, x, train=False))(variables)  # not op by op
  assert logits.shape == (2, spec.num_classes) and logits.dtype == jnp.float32
  if params is not None:
    assert sum(p.size for p in jax.tree.leaves(variables["params"])) == params
  assert bool(variables.get("batch_stats")) == (name in ("preact_resnet18", "wide_resnet"))


def test_normalization_happens_inside_the_model():
  # In float64, where normalizing inside or outside differs by a few roundings of 2^-53.
  spec = data.get_spec("fashion_mnist")
  with jax.enable_x64(True):
    with_norm = build("small_cnn", dtype=jnp.float64)
    without = build("small_cnn", normalize=False, dtype=jnp.float64)
    x = jax.random.uniform(jax.random.PRNGKey(0), (3, 28, 28, 1), jnp.float64)
    variables = jax.jit(lambda: with_norm.init(jax.random.PRNGKey(1), x))()
    normalized = (x - spec.mean[0]) / spec.std[0]
    a = jax.jit(with_norm.apply)(variables, x)
    b = jax.jit(without.apply)(variables, normalized)
    rtol = helpers.float64_rtol(10_000)
    np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol * np.abs(b).max())


def test_reshape_max_pool_equals_nn_max_pool():
  x = jax.random.normal(jax.random.PRNGKey(0), (4, 14, 14, 8))
  np.testing.assert_array_equal(models.max_pool_2x2(x), nn.max_pool(x, (2, 2), (2, 2)))


def test_batch_norm_running_stats_update_only_in_train_mode():
  model = build("wide_resnet", "cifar10")
  x = jax.random.uniform(jax.random.PRNGKey(0), (4, 32, 32, 3))
  # Jitted: op by op, a wide ResNet's init and apply took 15 s on 2 CPU cores.
  variables = jax.jit(lambda: model.init(jax.random.PRNGKey(1), x, train=False))()
  _, mutated = jax.jit(lambda v: model.apply(v, x, train=True, mutable=["batch_stats"]))(
      variables)
  before, after = jax.tree.leaves(variables["batch_stats"]), jax.tree.leaves(mutated)
  assert any(not np.allclose(a, b) for a, b in zip(before, after))


def test_bad_model_names():
  with pytest.raises(UatError, match="unknown model"):
    build("vgg16")
  with pytest.raises(UatError, match="6n\\+4"):
    model = build("wide_resnet", "cifar10", depth=12)
    model.init(jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3)))


def _plain_and_ours(monkeypatch, name, dataset, batch, dtype=jnp.float32):
  """(apply with models.conv_general_dilated, apply with plain lax convolutions, variables, x)."""
  model = build(name, dataset, dtype=dtype)
  spec = data.get_spec(dataset)
  x = jax.random.uniform(jax.random.PRNGKey(0), (batch, *spec.shape), dtype)
  variables = model.init(jax.random.PRNGKey(1), x, train=False)
  ours = jax.jit(lambda v, z: model.apply(v, z, train=False))

  def plain(v, z):
    with monkeypatch.context() as m:
      m.setattr(models, "conv_general_dilated", jax.lax.conv_general_dilated)
      return model.apply(v, z, train=False)
  return ours, plain, variables, x


@pytest.mark.parametrize("name,dataset", [("small_cnn", "fashion_mnist"),
                                          ("wide_resnet", "cifar10")])
def test_convolution_derivatives_equal_lax(monkeypatch, name, dataset):
  """models.conv_general_dilated only changes how the input gradient is laid out: values, input
  and weight gradients, forward-mode derivatives and Jacobians equal plain lax convolutions
  (strided, padded, 1x1 and bias-free convolutions in the wide ResNet).

  In float64: the two programs may add a convolution's terms in other orders; float64 rounding
  of that (helpers.float64_rtol, up to 1e4 terms a sum) plus one float32 rounding of the
  float32 weights' gradients is the tolerance."""
  with jax.enable_x64(True):
    _compare_derivatives(monkeypatch, name, dataset)


def _compare_derivatives(monkeypatch, name, dataset):
  ours, plain, variables, x = _plain_and_ours(monkeypatch, name, dataset, batch=2,
                                              dtype=jnp.float64)
  v = jax.random.normal(jax.random.PRNGKey(2), x.shape, x.dtype)
  loss = lambda f: (lambda p, z: jnp.sum(jnp.tanh(f(p, z))))
  checks = {
      "logits": lambda f: f(variables, x),
      "input and weight gradients": lambda f: jax.grad(loss(f), argnums=(0, 1))(variables, x),
      "jvp": lambda f: jax.jvp(lambda z: f(variables, z), (x,), (v,))[1],
  }
  if name == "small_cnn":
    # The full Jacobian (the input gradient's rule batched over outputs: the wide ResNet's rule
    # is the same custom convolution, checked above by its gradients) and second order: the
    # transpose of the custom JVP, differentiated again.
    checks["jacrev"] = lambda f: jax.jacrev(lambda z: f(variables, z))(x)
    checks["hessian-vector"] = lambda f: jax.jvp(
        jax.grad(lambda z: loss(f)(variables, z)), (x,), (v,))[1]
  for what, fn in checks.items():
    for a, b in zip(jax.tree.leaves(jax.jit(lambda: fn(ours))()),
                    jax.tree.leaves(jax.jit(lambda: fn(plain))())):
      rtol = helpers.float64_rtol(10_000) + 2 * helpers.U32
      np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol * np.abs(b).max(), err_msg=what)


@pytest.mark.parametrize("name,dataset", [("small_cnn", "fashion_mnist"),
                                          ("wide_resnet", "cifar10")])
def test_input_gradient_in_a_rolled_loop_uses_the_fast_convolution_layout(monkeypatch, name,
                                                                           dataset):
  """Inside a while loop (a rolled PGD loop), plain lax convolutions leave XLA:CPU an input
  gradient on a relabelled kernel (dim_labels ..._01oi), which it runs 4-5x slower; ours compiles
  every convolution in the canonical 01io layout. Structure, not timing: bench/ has the speed."""
  ours, plain, variables, x = _plain_and_ours(monkeypatch, name, dataset, batch=2)

  def rolled_ascent(f):
    grad = jax.grad(lambda z: jnp.sum(f(variables, z)[:, 0]))
    return jax.jit(lambda z: jax.lax.fori_loop(0, 3, lambda _, a: a + 1e-3 * grad(a), z))

  def kernel_labels(f):
    hlo = rolled_ascent(f).lower(x).compile().as_text()
    return [label.split("_")[1].split("-")[0] for label in
            __import__("re").findall(r"dim_labels=(\w+->\w+)", hlo)]

  labels = kernel_labels(ours)
  assert labels and set(labels) == {"01io"}, labels
  if jax.default_backend() == "cpu":  # shows the test can fail: the layout it guards against
    assert "01oi" in kernel_labels(plain)
