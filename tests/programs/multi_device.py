"""One training step on 1 and on 8 simulated devices (jit over the mesh), and jit against pmap on
8 devices, give the same update. Run by tests/test_train.py in a fresh interpreter.

The step computes in float64 (config.dtype), so the two programs, which add the same terms in
other orders (per-device partial sums, then an all-reduce), differ by float64 rounding only; the
parameters and statistics stay float32 and round to the same values except at rounding
boundaries. The tolerance is helpers.float64_rtol for the largest reduction (a convolution's
weight gradient: batch x height x width = 16 x 28 x 28 terms) plus one float32 ulp.
"""

import os

from tests import helpers  # imports no JAX, so the flags below still apply

os.environ["XLA_FLAGS"] = helpers.simulated_devices(8)
os.environ["JAX_ENABLE_X64"] = "1"

import jax  # noqa: E402
import numpy as np  # noqa: E402

from uat_jax import data, sharding, train  # noqa: E402

BATCH = 16
RTOL = helpers.float64_rtol(BATCH * 28 * 28) + 2 * helpers.U32


def assert_same(a, b, what):
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    np.testing.assert_allclose(x, y, rtol=RTOL, atol=RTOL * np.abs(y).max(), err_msg=what)


def one_step(c, batch, n, parallelism="jit"):
  c.parallelism = parallelism
  mesh = sharding.make_mesh(n)
  _, init_state, step = helpers.build_trainer(c, 10, mesh)
  state, metrics = step(init_state(), sharding.shard_batch(batch, mesh))
  state = train.export_state(step, state)
  if parallelism == "jit":
    assert len(state.params["Dense_0"]["kernel"].sharding.device_set) == n
  return jax.device_get((state.params, state.batch_stats, metrics["loss"]))


def main():
  assert jax.device_count() == 8
  split = helpers.small_fmnist(num_train=BATCH, num_test=1)["train"]
  batch = data.train_batch(split, 0, 0, BATCH)
  # The wide ResNet has every layer kind whose reduction spans examples (convolutions, dense
  # layers, batch norm); the small CNN over 8 devices is tested in tests/test_multihost.py.
  # Running statistics in the attack (bn_mode eval): pmap's batch statistics are per device.
  c = helpers.load_config("at_ls,runlocal")
  c.attack.bn_mode, c.attack.steps = "eval", 2
  c.model.name, c.model.depth, c.model.width = "wide_resnet", 10, 1
  c.batch_size, c.regularizer.on = BATCH, "both"
  c.optimizer.name, c.optimizer.weight_decay = "sgd", 5e-4
  c.dtype = "float64"
  # Without a random start: pmap draws each device's noise for its own shard. The 8-device jit
  # step is then one program for both comparisons.
  c.attack.random_start = False
  one, eight = one_step(c, batch, 1), one_step(c, batch, 8)
  assert_same(one, eight, "1 vs 8 devices")
  assert all(x.dtype == np.float32 for x in jax.tree.leaves(one[:2]))
  print("wide_resnet 1 vs 8 devices: same update, loss", one[2], eight[2])
  # pmap on the same 8 devices: the same update as jit (batch norm synchronized over the
  # devices, gradients pmean-ed).
  pmap = one_step(c, batch, 8, "pmap")
  assert_same(eight, pmap, "jit vs pmap")
  print("wide_resnet jit vs pmap on 8 devices: same update, loss", eight[2], pmap[2])


if __name__ == "__main__":
  main()
