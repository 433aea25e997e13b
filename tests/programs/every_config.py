"""One training step and one evaluation step of every shipped training config (its model,
input shape, classes, augmentation, attack and optimizer) on 8 simulated devices; a config whose
program is another's but for constants, the augmentation or the size of the last layer
(LOWERED_ONLY) has its step traced and lowered instead. Run by tests/test_train.py in a fresh
interpreter.

The global batch is 8 (one example per device) instead of the configs' 128 and the attacks run
one step instead of 10-100 (the PGD loop is rolled, so its trip count changes nothing in the
program), so that the three PreAct ResNet-18 configs fit the test budget on 2 CPU cores; every
config's own batch sizes are validated on 1, 2, 4, 6, 8 and 16 devices in tests/test_train.py.
The evaluation step is the config's PGD evaluator attack (evals.pgd at the training eps) through
uat_jax.evaluate.run_suite on the same mesh. The models' parameter counts are checked against
the published architectures' (batch-norm models also carry running statistics).
"""

import os
import sys

from tests import helpers  # imports no JAX, so the flags below still apply

os.environ["XLA_FLAGS"] = helpers.simulated_devices(8)

import jax  # noqa: E402
import numpy as np  # noqa: E402

from uat_jax import data, evaluate, models, optimizers, sharding, train, validation  # noqa: E402
from uat_jax import config as config_lib  # noqa: E402

BATCH = 8
# Configs whose programs are another config's but for constants, the augmentation (tested in
# tests/test_data.py) or the size of the last layer: their training step is traced and lowered
# on the 8-device mesh (every shape, dtype and sharding checked) but not compiled or run, which
# for a PreAct ResNet-18 is 10-15 s of the test budget each.
LOWERED_ONLY = {"svhn": "cifar10", "cifar100": "cifar10 (10 classes)",
                "mnist": "fashion_mnist"}
PARAMETERS = {("madry_cnn", 10): 3_274_634, ("preact_resnet18", 10): 11_172_170,
              ("preact_resnet18", 100): 11_218_340}


def one_config(path: str) -> str:
  c = config_lib.from_file(path)  # the config's default method: AT+EntM
  with c.unlocked():
    c.batch_size, c.attack.steps, c.evals.pgd.steps = BATCH, 1, 1
  validation.validate(c, 8)
  spec = data.get_spec(c.data.name)
  mesh = sharding.make_mesh(8)
  model = train.build_model(c, spec)
  schedule = optimizers.learning_rate_schedule(c.optimizer, 10)
  tx = optimizers.optimizer(c.optimizer, schedule)
  step = train.make_train_step(c, model, spec, schedule, mesh)
  state = train.prepare_state(step, train.create_train_state(c, model, spec, tx, mesh))
  plain = train.export_state(step, state)
  count = sum(p.size for p in jax.tree.leaves(plain.params))
  assert count == PARAMETERS[c.model.name, spec.num_classes], (path, count)
  assert bool(plain.batch_stats) == (c.model.name == "preact_resnet18"), path
  rng = np.random.default_rng(0)
  batch = {"image": rng.integers(0, 256, (BATCH, *spec.shape), dtype=np.uint8),
           "label": rng.integers(0, spec.num_classes, (BATCH,), dtype=np.int32)}
  name = path
  if name in LOWERED_ONLY:
    text = step.lower(state, sharding.shard_batch(batch, mesh)).as_text()
    assert "sharding" in text and len(text) > 10_000, path
    return (f"{name}: {c.model.name} {spec.shape} {spec.num_classes} classes, train step "
            f"lowered on 8 devices (compiled and run as {LOWERED_ONLY[name]})")
  state, metrics = step(state, sharding.shard_batch(batch, mesh))
  loss = float(metrics["loss"])
  assert np.isfinite(loss), (path, metrics)
  state = train.export_state(step, state)
  assert len(jax.tree.leaves(state.params)[0].sharding.device_set) == 8
  e = c.evals.pgd
  logits_fn = models.classifier(train.build_model(c, spec, for_training=False),
                                {"params": state.params, "batch_stats": state.batch_stats})
  x = batch["image"].astype(np.float32) / 255
  result = evaluate.run_suite(
      logits_fn, x, batch["label"],
      [{"name": "PGD", "attack": "pgd", "steps": e.steps,
        "step_size_rel": e.step_size / c.attack.eps}],
      jax.random.PRNGKey(0), eps=(c.attack.eps,), batch_size=BATCH, mesh=mesh, checks=False)
  robust = result.attacks["PGD"].robust[c.attack.eps]
  assert robust.shape == (BATCH,) and robust.sum() <= result.clean.sum()
  return (f"{name}: {c.model.name} {spec.shape} {spec.num_classes} classes, "
          f"train step loss {loss:.3f}, PGD-{e.steps} eval {int(robust.sum())}/{BATCH} on 8 devices")


def main():
  assert jax.device_count() == 8
  paths = [p for p in config_lib.recipes() if not p.endswith("_study")]
  for path in paths:
    print(one_config(path), flush=True)


if __name__ == "__main__":
  sys.exit(main())
