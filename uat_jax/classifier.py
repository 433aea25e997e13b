"""Trained classifiers restored for inference: `uat_jax.load(workdir)`.

    clf = uat_jax.load("workdirs/at_entm")          # the newest checkpoint; step="best" or N
    x, y = clf.test_images(1000)                     # float32 [N, H, W, C] in [0, 1], int32 labels
    logits = clf.logits_fn(x)                        # or clf(x)

Restoring reads only what inference needs (parameters, batch-norm statistics, the step) and the
run's config (W/config.json), not the optimizer state, so a checkpoint evaluates the same whatever
the optimizer settings of the config it is loaded with; except with weight averaging
(config.optimizer.weight_average > 0): then the averages of the parameters and of the batch-norm
statistics replace them, and the config must keep the run's optimizer settings (the default,
W/config.json).
`logits_fn` is a jax.tree_util.Partial whose leaves are the variables, so a jitted function of it
takes the parameters as arguments instead of baking them into the compiled program
(models.jit_with_model).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Union

import jax
import numpy as np

from uat_jax import checkpoints, data, models, optimizers, sharding
from uat_jax import config as config_lib
from uat_jax.errors import UatError


@dataclasses.dataclass(frozen=True)
class Classifier:
  """A checkpoint in inference mode (running batch-norm statistics), on images in [0, 1]."""
  logits_fn: jax.tree_util.Partial
  config: Any  # the run's ml_collections.ConfigDict
  step: int
  workdir: str

  def __call__(self, x):
    return self.logits_fn(x)

  def test_images(self, num_examples: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The first `num_examples` test images (0: all) as float32 in [0, 1], and their labels."""
    return data.images(self.config.data, "test", num_examples)

  def validation_images(self, num_examples: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The run's held-out validation images (config.data.validation_size > 0) and labels."""
    return data.images(self.config.data, "validation", num_examples)


Step = Union[None, int, str]  # None or "last": the newest; "best": W/checkpoints_best; an int


def _check_step(step: Step) -> None:
  if step in (None, "last", "best"):
    return
  if isinstance(step, bool) or not isinstance(step, (int, np.integer)):
    raise UatError(f"step={step!r}: pass None or 'last' (the newest checkpoint), 'best' (the one "
                   "kept by config.best_checkpoint) or a checkpoint's step (an int)")


def _inference_variables(workdir: str, config, model, spec, mesh,
                         step: Step) -> tuple[dict[str, Any], int]:
  """({"params", "batch_stats"}, step) of the checkpoint `step` names, replicated over `mesh`.
  Errors name the problem: no checkpoint, no such step, or one that does not fit the config's
  model and dataset."""
  shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0),
                                             jax.numpy.zeros((1, *spec.shape)), train=False))
  rep = sharding.replicated(mesh)
  abstract = {"params": shapes["params"], "batch_stats": shapes.get("batch_stats", {}),
              "step": jax.ShapeDtypeStruct((), np.int32)}
  averaged = optimizers.averaging_decay(config.optimizer) > 0
  if averaged:  # the whole optimizer state: the average's place in it depends on the chain
    tx = optimizers.optimizer(config.optimizer,
                              optimizers.learning_rate_schedule(config.optimizer, 1))
    abstract["opt_state"] = jax.eval_shape(tx.init, shapes["params"])
    abstract["average_stats"] = shapes.get("batch_stats", {})  # train.AveragedTrainState
  abstract = jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=rep),
                          abstract)
  best = step == "best"
  b = config.best_checkpoint
  mngr = checkpoints.reader(workdir, "best" if best else "last", b.metric or "unset", b.mode)
  try:
    only = mngr.best_step() if best else (None if step in (None, "last") else int(step))
    restored, found = checkpoints.restore_readable(mngr, abstract, config, only_step=only)
  finally:
    mngr.close()
  if found is None:
    raise UatError(f"no checkpoint in {mngr.directory}: train first (--mode=train) or pass "
                   "another --workdir")
  if averaged:
    return {"params": optimizers.averaged_params(restored["params"], restored["opt_state"]),
            "batch_stats": restored["average_stats"]}, found
  return {"params": restored["params"], "batch_stats": restored["batch_stats"]}, found


def load(workdir: str, step: Step = None, config=None, mesh=None) -> Classifier:
  """The classifier of a workdir's checkpoint: the newest readable one (step None or "last"),
  the best one ("best": the checkpoint kept in W/checkpoints_best by
  config.best_checkpoint.metric) or the one of an int step. `config` defaults to the run's own
  (W/config.json); pass one to change evaluation settings (its model and dataset must fit the
  checkpoint). `mesh` places the parameters (one device when None)."""
  _check_step(step)
  config = config_lib.load_workdir_config(workdir) if config is None else config
  mesh = sharding.make_mesh(1) if mesh is None else mesh
  spec = data.get_spec(config.data.name)
  model = models.build(config, spec)
  variables, found = _inference_variables(workdir, config, model, spec, mesh, step)
  return Classifier(models.classifier(model, variables), config, found,
                    os.path.abspath(workdir))
