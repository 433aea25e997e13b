"""Models: shapes, normalization inside the model, pooling, batch norm."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from uat_jax import data, models
from uat_jax.errors import UatError


def build(name, dataset="fashion_mnist", **kw):
  c = ml_collections.ConfigDict(dict(name=name, normalize=True, depth=10, width=1))
  c.update(kw)
  return models.create_model(c, data.get_spec(dataset))


@pytest.mark.parametrize("name,dataset,params", [
    ("madry_cnn", "fashion_mnist", 3_274_634),
    ("small_cnn", "fashion_mnist", 206_922),
    ("preact_resnet18", "cifar10", 11_172_170),
    ("wide_resnet", "cifar100", None),
])
def test_shapes_and_sizes(name, dataset, params):
  model = build(name, dataset)
  spec = data.get_spec(dataset)
  x = jnp.zeros((2, *spec.shape))
  variables = jax.jit(lambda: model.init(jax.random.PRNGKey(0), x, train=False))()
  logits = model.apply(variables, x, train=False)
  assert logits.shape == (2, spec.num_classes) and logits.dtype == jnp.float32
  if params is not None:
    assert sum(p.size for p in jax.tree.leaves(variables["params"])) == params
  assert models.has_batch_norm(variables) == (name in ("preact_resnet18", "wide_resnet"))


def test_normalization_happens_inside_the_model():
  spec = data.get_spec("fashion_mnist")
  with_norm, without = build("small_cnn"), build("small_cnn", normalize=False)
  x = jax.random.uniform(jax.random.PRNGKey(0), (3, 28, 28, 1))
  variables = with_norm.init(jax.random.PRNGKey(1), x)
  normalized = (x - spec.mean[0]) / spec.std[0]
  np.testing.assert_allclose(with_norm.apply(variables, x), without.apply(variables, normalized),
                             rtol=1e-5, atol=1e-5)


def test_reshape_max_pool_equals_nn_max_pool():
  x = jax.random.normal(jax.random.PRNGKey(0), (4, 14, 14, 8))
  np.testing.assert_array_equal(models.max_pool_2x2(x), nn.max_pool(x, (2, 2), (2, 2)))


def test_batch_norm_running_stats_update_only_in_train_mode():
  model = build("wide_resnet", "cifar10")
  x = jax.random.uniform(jax.random.PRNGKey(0), (4, 32, 32, 3))
  variables = model.init(jax.random.PRNGKey(1), x, train=False)
  _, mutated = model.apply(variables, x, train=True, mutable=["batch_stats"])
  before, after = jax.tree.leaves(variables["batch_stats"]), jax.tree.leaves(mutated)
  assert any(not np.allclose(a, b) for a, b in zip(before, after))


def test_bad_model_names():
  with pytest.raises(UatError, match="unknown model"):
    build("vgg16")
  with pytest.raises(UatError, match="6n\\+4"):
    model = build("wide_resnet", "cifar10", depth=12)
    model.init(jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3)))
