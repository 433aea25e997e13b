"""Training: standard, EntM, LS, PGD-AT, AT+EntM, AT+LS from one jitted (or pmapped) step.

train_step = jit( augment -> PGD inner maximization -> regularized loss -> optax update ), over a
1-D ('data',) mesh with the batch sharded and the state replicated and donated.
`train_and_evaluate(config, workdir, evaluators=...)` runs the loop: deterministic batches in
(seed, step), metric writers (uat_jax.writers: TensorBoard, metrics.jsonl, logs), the evaluators
each at its own period (uat_jax.evaluators builds them from config.evals), orbax checkpoints,
and resumption from the newest complete checkpoint.
"""

from __future__ import annotations

import functools
import math
import os
import time
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import orbax.checkpoint as ocp
from absl import logging
from clu import metrics as clu_metrics
from flax import traverse_util
from flax.training import train_state

from uat_jax import (attacks, checkpoints, data, files, lock, losses, models, optimizers,
                     sharding, validation, writers)
from uat_jax.errors import Preempted, UatError


class TrainState(train_state.TrainState):
  """params, optax state and step (from flax), batch-norm statistics and the run's root key."""
  batch_stats: Any
  key: jax.Array  # root key; per-step keys are fold_in(key, step)


class AveragedTrainState(TrainState):
  """The state of a run with weight averaging (config.optimizer.weight_average > 0): the
  optimizer state keeps the parameters' moving average (optimizers.weight_average), and this the
  batch-norm statistics' with the same decay, so that the averaged model is evaluated with
  statistics averaged alike."""
  average_stats: Any


def inference_variables(state: TrainState) -> dict[str, Any]:
  """{"params", "batch_stats"} that evaluations use: with weight averaging the averages, else the
  parameters and statistics being trained."""
  if isinstance(state, AveragedTrainState):
    return {"params": optimizers.averaged_params(state.params, state.opt_state),
            "batch_stats": state.average_stats}
  return {"params": state.params, "batch_stats": state.batch_stats}


# --------------------------------------------------------------------------------------------
# Building blocks.
# --------------------------------------------------------------------------------------------

def total_steps(config, num_train_examples: int) -> int:
  if config.num_train_steps > 0:
    return int(config.num_train_steps)
  return max(1, int(math.ceil(config.num_epochs * num_train_examples / config.batch_size)))


def num_train_examples(config) -> int:
  """Training examples of `config` from the dataset's size (no data read): the train split less
  data.validation_size, or data.train_size."""
  spec = data.get_spec(config.data.name)
  return config.data.train_size or spec.num_train - config.data.validation_size


def create_train_state(config, model, spec, tx, mesh, abstract: bool = False) -> TrainState:
  """Initializes parameters from config.seed, placed replicated on the mesh. The seed is an
  argument of the compiled program (the same keys as a constant seed), so runs that differ only
  in their seed share one program (and the persistent compilation cache's entry). With
  `abstract`, only the shapes, dtypes and shardings (traced, never compiled)."""

  def init(seed):
    init_key, state_key = jax.random.split(jax.random.PRNGKey(seed))
    variables = model.init(init_key, jnp.zeros((1, *spec.shape), jnp.float32), train=False)
    stats = variables.get("batch_stats", {})
    if optimizers.averaging_decay(config.optimizer) > 0:
      return AveragedTrainState.create(
          apply_fn=model.apply, params=variables["params"], tx=tx, batch_stats=stats,
          key=state_key, average_stats=jax.tree.map(jnp.copy, stats))
    return TrainState.create(apply_fn=model.apply, params=variables["params"], tx=tx,
                             batch_stats=stats, key=state_key)

  init = jax.jit(init, out_shardings=sharding.replicated(mesh))
  return (init.eval_shape if abstract else init)(np.uint32(config.seed))


def make_logits_fn(model, params, batch_stats, bn_mode: str = "eval"):
  """`logits_fn(x)` for attacks: running statistics ("eval") or batch statistics with the
  updates discarded ("train")."""
  variables = {"params": params, "batch_stats": batch_stats}
  if bn_mode == "train" and batch_stats:
    return lambda x: model.apply(variables, x, train=True, mutable=["batch_stats"])[0]
  return lambda x: model.apply(variables, x, train=False)


def augmentation_kind(config, spec) -> str:
  return spec.augment if config.data.augment == "default" else config.data.augment


# --------------------------------------------------------------------------------------------
# The steps.
# --------------------------------------------------------------------------------------------

def train_step(state: TrainState, batch, *, model, config, spec, loss_fn, schedule,
               axis_name=None):
  """One update: augment -> (PGD) -> regularized loss -> optax. Returns (state, metrics).

  Under jit over a mesh the batch is global (axis_name None). Under pmap (axis_name set) each
  device holds a shard: its random draws are folded with the device index, and gradients and
  metrics are averaged over the devices (batch-norm statistics by the model's bn_axis_name)."""
  adversarial, kind = losses.method_parts(config.method)
  step_key = jax.random.fold_in(state.key, state.step)
  if axis_name is not None:
    step_key = jax.random.fold_in(step_key, jax.lax.axis_index(axis_name))
  k_aug, k_attack = jax.random.split(step_key)
  x = data.augment(k_aug, data.to_float(batch["image"]), augmentation_kind(config, spec))
  y = batch["label"]
  has_bn = bool(state.batch_stats)

  if adversarial:
    a = config.attack
    attack_logits = make_logits_fn(model, state.params, state.batch_stats, a.bn_mode)
    attack_loss = losses.per_example_objective(config) if a.loss == "objective" else "ce"
    x_task = jax.lax.stop_gradient(attacks.pgd(
        attack_logits, x, y, key=k_attack, eps=a.eps, step_size=a.step_size, steps=a.steps,
        loss=attack_loss, random_start=a.random_start, unroll=a.unroll))
  else:
    x_task = x
  clean_for_reg = adversarial and kind != "none" and config.regularizer.on != "adversarial"

  def forward(params, inputs):
    """Train-mode forward; returns (logits, new batch stats)."""
    variables = {"params": params, "batch_stats": state.batch_stats}
    if has_bn:
      logits, mutated = model.apply(variables, inputs, train=True, mutable=["batch_stats"])
      return logits, mutated["batch_stats"]
    return model.apply(variables, inputs, train=True), state.batch_stats

  def loss_of(params):
    logits, new_stats = forward(params, x_task)  # the last forward: its statistics are kept
    clean_logits = forward(params, x)[0] if clean_for_reg else None
    loss, metrics = loss_fn(logits, y, clean_logits)
    return loss, (metrics, logits, new_stats)

  # Gradients in the wider of float32 and the compute dtype: a float64 computation reduces them
  # over devices (pmean) in float64 too; parameters and statistics keep their stored dtypes.
  wide = jnp.promote_types(models.DTYPES[config.dtype], jnp.float32)
  (_, (metrics, logits, new_stats)), grads = jax.value_and_grad(loss_of, has_aux=True)(
      jax.tree.map(lambda p: p.astype(wide), state.params))
  new_stats = jax.tree.map(lambda new, old: new.astype(old.dtype), new_stats, state.batch_stats)
  if axis_name is not None:
    grads = jax.lax.pmean(grads, axis_name)
  grads = jax.tree.map(lambda g, p: g.astype(p.dtype), grads, state.params)
  metrics = dict(metrics)
  if adversarial:
    clean_logits = make_logits_fn(model, state.params, state.batch_stats, config.attack.bn_mode)(x)
    metrics["accuracy_adv"] = jnp.mean(losses.accuracy(logits, y))
    metrics["accuracy_clean"] = jnp.mean(losses.accuracy(jax.lax.stop_gradient(clean_logits), y))
  else:
    metrics["accuracy_clean"] = jnp.mean(losses.accuracy(logits, y))
  if axis_name is not None:
    metrics = jax.lax.pmean(metrics, axis_name)
  metrics["grad_norm"] = optax.tree.norm(grads)
  metrics["learning_rate"] = schedule(state.step)
  new_state = state.apply_gradients(grads=grads, batch_stats=new_stats)
  if isinstance(state, AveragedTrainState):
    new_state = new_state.replace(average_stats=optimizers.moving_average(
        state.average_stats, new_stats, optimizers.averaging_decay(config.optimizer)))
  return new_state, metrics


def build_model(config, spec, for_training: bool = True):
  """models.build for this loop: for training, batch-norm statistics are averaged over the
  devices under pmap."""
  return models.build(config, spec, for_training=for_training, bn_axis_name=(
      sharding.DATA_AXIS if config.parallelism == "pmap" else None))


def make_train_step(config, model, spec, schedule, mesh):
  """The jitted (or, with config.parallelism = "pmap", pmapped) train step."""
  fn = functools.partial(train_step, model=model, config=config, spec=spec,
                         loss_fn=losses.objective(config), schedule=schedule)
  if config.parallelism == "pmap":
    if jax.process_count() > 1:
      raise UatError("parallelism=pmap runs on one host; on several hosts use the default jit "
                     "over the mesh (--config.parallelism=jit)")
    return sharding.PmapStep(fn, mesh)
  rep, batch = sharding.replicated(mesh), sharding.batch_sharded(mesh)
  return jax.jit(fn, in_shardings=(rep, batch), out_shardings=(rep, rep), donate_argnums=(0,))


def prepare_state(step_fn, state):
  """The state in the form `step_fn` takes (replicated for pmap)."""
  return step_fn.prepare(state) if isinstance(step_fn, sharding.PmapStep) else state


def export_state(step_fn, state):
  """The plain state from the form `step_fn` keeps it in."""
  return step_fn.export(state) if isinstance(step_fn, sharding.PmapStep) else state


# --------------------------------------------------------------------------------------------
# Metrics output.
# --------------------------------------------------------------------------------------------

def flatten_config(config) -> dict[str, Any]:
  """{"attack.eps": 0.1, ...}: one entry per leaf, for hyper-parameter logs."""
  flat = traverse_util.flatten_dict(config.to_dict(), sep=".")
  return {k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in flat.items()}


@functools.cache
def _metrics_merger(keys: tuple[str, ...]):
  """A jitted (pending, step metrics) -> pending: the step's metrics as a clu collection of
  averages, merged into those since the last log, on the device in one dispatch (eager clu
  merges cost about 80 small dispatches, and a new collection class each step about 10 ms)."""
  collection = clu_metrics.Collection.create(
      **{k: clu_metrics.Average.from_output(k) for k in keys})

  def merge(pending, step_metrics):
    new = collection.single_from_model_output(**step_metrics)
    return new if pending is None else pending.merge(new)

  return jax.jit(merge)


def _check_finite(values: dict[str, float], first_step: int, step: int,
                  last_checkpoint: int | None) -> None:
  """Stops training on a non-finite metric (loss, gradient norm, ...) of steps
  first_step..step, naming the metric and keeping the last checkpoint."""
  bad = {k: v for k, v in values.items() if not math.isfinite(v)}
  if bad:
    name, value = next(iter(bad.items()))
    kept = ("no checkpoint was written yet" if last_checkpoint is None
            else f"the last checkpoint (step {last_checkpoint}) is kept")
    raise UatError(f"non-finite train/{name}={value} in steps {first_step}-{step}; training "
                   f"stopped and {kept}: lower the learning rate or check the inputs")


# --------------------------------------------------------------------------------------------
# The loop.
# --------------------------------------------------------------------------------------------

def restore_or_create(mngr: ocp.CheckpointManager, create: Callable[..., TrainState], config,
                      quarantine: str) -> TrainState:
  """The newest readable checkpoint restored into the structure and shardings of
  `create(abstract=True)`, or `create()` (a new state) when there is none; unreadable newer ones
  are moved to `quarantine`. A resume never compiles or runs the initialization."""
  abstract = create(abstract=True)
  restored, step = checkpoints.restore_readable(mngr, abstract, config, quarantine=quarantine)
  if step is None:
    return create()
  logging.info("Resuming from checkpoint at step %d", step)
  return restored


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *,
                       evaluators: Sequence[Any] = (), num_devices: int | None = None,
                       mesh=None) -> dict[str, Any]:
  """Trains per `config` in `workdir` (resuming if it holds checkpoints) on `mesh` (all devices,
  or the first `num_devices`, when None). Each evaluator (uat_jax.evaluators; anything with a
  `name`, an `every_steps` and `run(logits_fn, step, mesh) -> {scalar name: value}`) runs every
  `every_steps` steps and after the last step, on the model in inference mode; its scalars are
  logged. Returns {"step": the last step, **the last scalars of every evaluator}. The checkpoint
  manager and the metric writers are closed on every exit, error or not."""
  mesh = sharding.make_mesh(num_devices) if mesh is None else mesh
  validation.validate(config, mesh.devices.size)
  spec = data.get_spec(config.data.name)
  files.check_workdir(workdir)
  logging.info("Loading %s", config.data.name)
  train_split = data.train_split(config.data)
  # Only now touch the workdir: bad config or missing data leave it as it was.
  files.prepare_workdir(workdir)
  with lock.lock(workdir, "training"):  # one writer per workdir
    return _train_locked(config, workdir, evaluators, mesh, spec, train_split)


def _train_locked(config, workdir, evaluators, mesh, spec, train_split) -> dict[str, Any]:
  is_chief = sharding.is_chief()
  num_steps = total_steps(config, len(train_split))

  model = build_model(config, spec)
  schedule = optimizers.learning_rate_schedule(config.optimizer, num_steps)
  tx = optimizers.optimizer(config.optimizer, schedule)
  checkpoints.log_partial(workdir)  # the managers remove them as they open
  mngr = checkpoints.manager(workdir, config.max_checkpoints)
  b = config.best_checkpoint
  best = checkpoints.best_manager(workdir, b.metric, b.mode) if b.metric else None
  writer = None
  try:
    state = restore_or_create(
        mngr, functools.partial(create_train_state, config, model, spec, tx, mesh), config,
        quarantine=os.path.join(workdir, checkpoints.CORRUPT_DIR))
    initial_step = int(jax.device_get(state.step))
    if is_chief:  # after the restore, which rejects a config that does not fit the checkpoints
      files.write_atomic(os.path.join(workdir, "config.json"),
                         config.to_json_best_effort(indent=2, sort_keys=True))
    writer = writers.MultiWriter([
        writers.default_writer(workdir, just_logging=not is_chief),
        *([writers.JsonlWriter(os.path.join(workdir, "metrics.jsonl"), initial_step)]
          if is_chief else []),
    ])
    if initial_step == 0:
      writer.write_hparams(flatten_config(config))
    logging.info("Training %s (%s) on %s for %d steps from step %d on %d device(s)",
                 config.model.name, config.method, config.data.name, num_steps, initial_step,
                 mesh.devices.size)
    return _loop(config, model, spec, schedule, mesh, state, train_split, num_steps,
                 initial_step, mngr, best, writer, list(evaluators))
  finally:  # a save in flight completes (or is left unfinalized, never half-visible)
    for m in (mngr, best):
      if m is not None:
        checkpoints.finish(m)
        m.close()
    if writer is not None:
      writer.close()


def _loop(config, model, spec, schedule, mesh, state, train_split, num_steps, initial_step,
          mngr, best, writer, evaluators) -> dict[str, Any]:
  p_train_step = make_train_step(config, model, spec, schedule, mesh)
  pmap_mode = isinstance(p_train_step, sharding.PmapStep)
  state = prepare_state(p_train_step, state)
  eval_model = build_model(config, spec, for_training=False)
  report_progress = writers.Progress(num_steps, writer, every_steps=config.log_every_steps)
  pending = None  # clu metrics since the last log
  pending_since = initial_step + 1  # the first step whose metrics are in `pending`
  results: dict[str, Any] = {}
  evaluated_at: dict[str, int] = {}

  def flush_train_metrics(step):
    nonlocal pending, pending_since
    if pending is None:
      return
    values = {k: float(v) for k, v in pending.compute().items()}
    _check_finite(values, pending_since, step, mngr.latest_step())
    writer.write_scalars(step, {f"train/{k}": v for k, v in values.items()})
    pending, pending_since = None, step + 1

  def evaluate(ev, step):
    plain = export_state(p_train_step, state)
    logits_fn = models.classifier(eval_model, inference_variables(plain))
    with report_progress.timed(ev.name):
      scalars = ev.run(logits_fn, step, mesh)
    writer.write_scalars(step, scalars)
    results.update(scalars)
    evaluated_at[ev.name] = step
    metric = config.best_checkpoint.metric
    # orbax keeps it only if it is the best so far; a step saved before a restart (the same
    # state, deterministically) is not saved again.
    if best is not None and metric in scalars and step not in best.all_steps():
      checkpoints.save(best, step, plain, {metric: float(scalars[metric])})

  def save(step):
    flush_train_metrics(step)  # never checkpoint a state whose loss went non-finite
    checkpoints.save(mngr, step, export_state(p_train_step, state))

  t0 = time.time()
  with checkpoints.Preemption(mngr) as preemption:
    for step in range(initial_step, num_steps):
      batch = data.train_batch(train_split, config.seed, step, config.batch_size)
      if not pmap_mode:  # pmap splits the host batch itself
        batch = sharding.shard_batch(batch, mesh)
      with jax.profiler.StepTraceAnnotation("train", step_num=step):
        state, step_metrics = p_train_step(state, batch)
      pending = _metrics_merger(tuple(sorted(step_metrics)))(pending, step_metrics)
      done = step + 1
      report_progress(done)
      is_last = done == num_steps
      if done % config.log_every_steps == 0 or is_last:
        flush_train_metrics(done)
      for ev in evaluators:
        if ev.every_steps > 0 and (done % ev.every_steps == 0 or is_last):
          evaluate(ev, done)
      stop = preemption.requested(done)
      if done % config.checkpoint_every_steps == 0 or is_last or stop:
        save(done)
      if stop and not is_last:  # the caller's `finally` waits for the save to complete
        writer.flush()
        raise Preempted(done, str(mngr.directory))
  writer.flush()
  for ev in evaluators:  # nothing left to train (a finished run resumed): evaluate what is there
    if ev.every_steps > 0 and evaluated_at.get(ev.name) != num_steps:
      evaluate(ev, num_steps)
  logging.info("Finished %d steps in %.1f s", num_steps - initial_step, time.time() - t0)
  return {"step": num_steps, **results}
