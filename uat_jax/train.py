"""Training: standard, EntM, LS, PGD-AT, AT+EntM, AT+LS from one jitted step.

train_step = jit( augment -> PGD inner maximization -> regularized loss -> optax update ), over a
1-D ('data',) mesh with the batch sharded and the state replicated and donated.
`train_and_evaluate(config, workdir)` runs the loop: deterministic batches in (seed, step),
clu metric writers (TensorBoard, metrics.jsonl, logs), periodic test evaluation, orbax
checkpoints, and resumption from the newest complete checkpoint.
"""

from __future__ import annotations

import functools
import json
import math
import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import orbax.checkpoint as ocp
from absl import logging
from clu import metric_writers, metrics as clu_metrics, periodic_actions
from flax.training import train_state

from uat_jax import attacks, checkpoints, config_lib, data, losses, models, sharding
from uat_jax.errors import Preempted, UatError


class TrainState(train_state.TrainState):
  """params, optax state and step (from flax), batch-norm statistics and the run's root key."""
  batch_stats: Any
  key: jax.Array  # root key; per-step keys are fold_in(key, step)


# --------------------------------------------------------------------------------------------
# Building blocks.
# --------------------------------------------------------------------------------------------

def total_steps(config, num_train_examples: int) -> int:
  if config.num_train_steps > 0:
    return int(config.num_train_steps)
  return max(1, int(math.ceil(config.num_epochs * num_train_examples / config.batch_size)))


def create_learning_rate_schedule(opt_config, num_steps: int) -> optax.Schedule:
  lr = opt_config.learning_rate
  if opt_config.schedule == "constant":
    schedule = optax.constant_schedule(lr)
  elif opt_config.schedule == "piecewise":
    schedule = optax.piecewise_constant_schedule(
        lr, {int(b * num_steps): opt_config.decay_factor for b in opt_config.boundaries})
  elif opt_config.schedule == "cosine":
    schedule = optax.cosine_decay_schedule(lr, max(1, num_steps - opt_config.warmup_steps))
  else:
    raise UatError(f"unknown optimizer.schedule {opt_config.schedule!r}")
  if opt_config.warmup_steps > 0:
    warmup = optax.linear_schedule(0.0, lr, opt_config.warmup_steps)
    schedule = optax.join_schedules([warmup, schedule], [opt_config.warmup_steps])
  return schedule


def create_optimizer(opt_config, schedule: optax.Schedule) -> optax.GradientTransformation:
  """SGD (momentum, optional Nesterov) or Adam; weight decay as an L2 term on the gradient of
  every parameter, the way the PyTorch recipes (Madry, Rice) apply it."""
  if opt_config.name == "sgd":
    opt = optax.sgd(schedule, momentum=opt_config.momentum or None, nesterov=opt_config.nesterov)
  elif opt_config.name == "adam":
    opt = optax.adam(schedule)
  else:
    raise UatError(f"unknown optimizer {opt_config.name!r}")
  if opt_config.weight_decay > 0:
    opt = optax.chain(optax.add_decayed_weights(opt_config.weight_decay), opt)
  return opt


def create_train_state(config, model, spec, tx, mesh) -> TrainState:
  """Initializes parameters from config.seed, placed replicated on the mesh."""

  def init():
    init_key, state_key = jax.random.split(jax.random.PRNGKey(config.seed))
    variables = model.init(init_key, jnp.zeros((1, *spec.shape), jnp.float32), train=False)
    return TrainState.create(apply_fn=model.apply, params=variables["params"], tx=tx,
                             batch_stats=variables.get("batch_stats", {}), key=state_key)

  return jax.jit(init, out_shardings=sharding.replicated(mesh))()


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
  wide = jnp.promote_types(DTYPES[config.dtype], jnp.float32)
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
  metrics["grad_norm"] = optax.global_norm(grads)
  metrics["learning_rate"] = schedule(state.step)
  new_state = state.apply_gradients(grads=grads, batch_stats=new_stats)
  return new_state, metrics


def eval_step(state: TrainState, batch, key, *, model, config):
  """Sums over one padded test batch: clean and PGD correct, predictive entropy, count."""
  x, y, mask = data.to_float(batch["image"]), batch["label"], batch["mask"]
  logits_fn = make_logits_fn(model, state.params, state.batch_stats, "eval")
  logits = logits_fn(x)
  e = config.eval
  x_adv = attacks.pgd(logits_fn, x, y, key=key, eps=config.attack.eps, step_size=e.pgd_step_size,
                      steps=e.pgd_steps, unroll=config.attack.unroll)
  return {
      "correct": jnp.sum(losses.accuracy(logits, y) * mask),
      "pgd_correct": jnp.sum(losses.accuracy(logits_fn(x_adv), y) * mask),
      "entropy": jnp.sum(losses.entropy(logits) * mask),
      "count": jnp.sum(mask),
  }


DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float64": jnp.float64}


def build_model(config, spec, for_training: bool = True):
  """The model of config.model. For training it computes in config.dtype and, under pmap,
  averages batch-norm statistics over the devices; otherwise (evaluation, attacks, Jacobians) it
  computes in float32, or in float64 when config.dtype is float64 (numerical checks). Both have
  the same parameters."""
  eval_dtype = jnp.float64 if config.dtype == "float64" else jnp.float32
  return models.create_model(
      config.model, spec,
      bn_axis_name=sharding.DATA_AXIS if for_training and config.parallelism == "pmap" else None,
      dtype=DTYPES[config.dtype] if for_training else eval_dtype)


class PmapTrainStep:
  """config.parallelism = "pmap": the train step compiled with jax.pmap over the mesh's devices.

  Between steps the state carries a leading device axis: `prepare(state)` replicates a state
  (as created or restored), `step(state, batch)` takes a global batch and splits it over the
  devices, `export(state)` gives the plain state back (for evaluation and checkpoints)."""

  def __init__(self, fn, mesh):
    self.devices = list(mesh.devices.flat)
    self.n = len(self.devices)
    self._step = jax.pmap(functools.partial(fn, axis_name=sharding.DATA_AXIS),
                          axis_name=sharding.DATA_AXIS, devices=self.devices,
                          donate_argnums=(0,))

  def prepare(self, state):
    return jax.device_put_replicated(jax.device_get(state), self.devices)

  def export(self, state):
    return jax.tree.map(lambda a: a[0], state)

  def __call__(self, state, batch):
    batch = {k: np.asarray(v).reshape((self.n, -1) + v.shape[1:]) for k, v in batch.items()}
    state, metrics = self._step(state, batch)
    return state, jax.tree.map(lambda a: a[0], metrics)


def make_train_step(config, model, spec, schedule, mesh):
  """The jitted (or, with config.parallelism = "pmap", pmapped) train step."""
  fn = functools.partial(train_step, model=model, config=config, spec=spec,
                         loss_fn=losses.objective(config), schedule=schedule)
  if config.parallelism == "pmap":
    if jax.process_count() > 1:
      raise UatError("parallelism=pmap runs on one host; on several hosts use the default jit "
                     "over the mesh (--config.parallelism=jit)")
    return PmapTrainStep(fn, mesh)
  rep, batch = sharding.replicated(mesh), sharding.batch_sharded(mesh)
  return jax.jit(fn, in_shardings=(rep, batch), out_shardings=(rep, rep), donate_argnums=(0,))


def prepare_state(step_fn, state):
  """The state in the form `step_fn` takes (replicated for pmap)."""
  return step_fn.prepare(state) if isinstance(step_fn, PmapTrainStep) else state


def export_state(step_fn, state):
  """The plain state from the form `step_fn` keeps it in."""
  return step_fn.export(state) if isinstance(step_fn, PmapTrainStep) else state


def make_eval_step(config, model, mesh):
  fn = functools.partial(eval_step, model=model, config=config)
  rep = sharding.replicated(mesh)
  return jax.jit(fn, in_shardings=(rep, sharding.batch_sharded(mesh), rep), out_shardings=rep)


def evaluate(p_eval_step, state, split: data.Split, config, mesh) -> dict[str, float]:
  """Clean accuracy, PGD accuracy at the training eps, and mean entropy on the test split."""
  key = jax.random.fold_in(jax.random.PRNGKey(config.seed), 0x5EED)  # same points every eval
  sums = None
  for i, batch in enumerate(data.eval_batches(split, config.eval.batch_size,
                                              config.eval.num_examples)):
    out = p_eval_step(state, sharding.shard_batch(batch, mesh), jax.random.fold_in(key, i))
    sums = out if sums is None else jax.tree.map(jnp.add, sums, out)
  sums = jax.device_get(sums)
  n = float(sums["count"])
  return {"clean_accuracy": float(sums["correct"]) / n,
          "pgd_accuracy": float(sums["pgd_correct"]) / n,
          "mean_entropy": float(sums["entropy"]) / n,
          "num_examples": int(n)}


# --------------------------------------------------------------------------------------------
# Metrics output.
# --------------------------------------------------------------------------------------------

class JsonlWriter(metric_writers.MetricWriter):
  """Appends one JSON line {"step": s, name: value, ...} per write_scalars call.

  Scalars only; images, histograms and the rest go to TensorBoard through the default writer.
  """

  def __init__(self, path: str):
    self._file = open(path, "a", encoding="utf-8")

  def write_scalars(self, step, scalars):
    record = {"step": int(step), **{k: float(v) for k, v in scalars.items()}}
    self._file.write(json.dumps(record) + "\n")

  def write_hparams(self, hparams):
    self._file.write(json.dumps({"hparams": {k: str(v) for k, v in hparams.items()}}) + "\n")

  def write_images(self, step, images):
    pass

  def write_videos(self, step, videos):
    pass

  def write_audios(self, step, audios, *, sample_rate):
    pass

  def write_texts(self, step, texts):
    pass

  def write_histograms(self, step, arrays, num_buckets=None):
    pass

  def write_summaries(self, step, values, metadata=None):
    pass

  def flush(self):
    self._file.flush()

  def close(self):
    self._file.close()


def flatten_config(config) -> dict[str, Any]:
  """{"attack.eps": 0.1, ...}: one entry per leaf, for hyper-parameter logs."""
  flat = {}

  def walk(prefix, node):
    for k, v in node.items():
      if isinstance(v, (dict, ml_collections.ConfigDict)):
        walk(f"{prefix}{k}.", v)
      else:
        flat[prefix + k] = v if isinstance(v, (int, float, str, bool)) else str(v)

  walk("", config)
  return flat


def _metrics_collection(keys):
  return clu_metrics.Collection.create(**{k: clu_metrics.Average.from_output(k) for k in keys})


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


def format_summary(config, results: dict[str, float]) -> str:
  e = config.eval
  rows = [("clean accuracy", results["clean_accuracy"]),
          (f"PGD-{e.pgd_steps} accuracy (eps={config.attack.eps:.4g})", results["pgd_accuracy"]),
          ("mean predictive entropy (nats)", results["mean_entropy"])]
  width = max(len(r[0]) for r in rows)
  lines = [f"{config.data.name} / {config.model.name} / {config.method}: "
           f"{results['num_examples']} test examples",
           f"| {'metric'.ljust(width)} | value  |", f"|{'-' * (width + 2)}|--------|"]
  lines += [f"| {name.ljust(width)} | {value:.4f} |" for name, value in rows]
  return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# The loop.
# --------------------------------------------------------------------------------------------

def _check_workdir(workdir: str) -> None:
  """Fails early (before loading data) if `workdir` cannot be created or written; creates
  nothing."""
  path = os.path.abspath(workdir)
  while not os.path.exists(path):
    path = os.path.dirname(path)
  if not (os.path.isdir(path) and os.access(path, os.W_OK | os.X_OK)):
    reason = "not a directory" if not os.path.isdir(path) else "no write permission"
    raise UatError(f"workdir {workdir} is not writable ({path}: {reason}): choose another "
                   "--workdir")


def _prepare_workdir(workdir: str) -> None:
  try:
    os.makedirs(workdir, exist_ok=True)
    probe = os.path.join(workdir, ".write_test")
    with open(probe, "w") as f:
      f.write("ok")
    os.remove(probe)
  except OSError as e:
    raise UatError(f"workdir {workdir} is not writable ({e.strerror}): choose another "
                   "--workdir") from e


def restore_newest(workdir: str, config, model, spec, mesh) -> tuple["TrainState", int]:
  """The newest readable checkpoint of `workdir`, restored replicated over `mesh`, and its step.
  Errors name the problem: no checkpoint, or one that does not fit the config's model/data. An
  unreadable newest checkpoint is reported and an older one used (left in place: read only)."""
  mngr = checkpoints.reader(workdir)
  tx = create_optimizer(config.optimizer, create_learning_rate_schedule(config.optimizer, 1))
  shapes = jax.eval_shape(lambda: create_train_state(config, model, spec, tx, mesh))
  rep = sharding.replicated(mesh)
  abstract = jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=rep), shapes)
  try:
    state, step = checkpoints.restore_readable(mngr, abstract, config)
  finally:
    mngr.close()
  if step is None:
    raise UatError(f"no checkpoint in {mngr.directory}: train first (--mode=train) or pass "
                   "another --workdir")
  return state, step


def restore_or_keep(mngr: ocp.CheckpointManager, state: TrainState, config,
                    quarantine: str) -> TrainState:
  """The newest readable checkpoint restored into `state`'s structure and shardings, or `state`
  when there is none; unreadable newer ones are moved to `quarantine`."""
  abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, state)
  restored, step = checkpoints.restore_readable(mngr, abstract, config, quarantine=quarantine)
  if step is None:
    return state
  logging.info("Resuming from checkpoint at step %d", step)
  return restored


def _jacobian_tracker(config, model, test_split: data.Split, writer):
  """A clu PeriodicCallback function logging mean input-Jacobian norms on the first
  jacobian.track_examples test images as jacobian/<output>/<norm> (curves over training)."""
  from uat_jax import jacobian  # jacobian's CLI part imports evaluate, which imports this module
  jc = config.jacobian
  x = test_split.images[:jc.track_examples].astype(np.float32) / 255.0
  y = test_split.labels[:jc.track_examples]

  def track(step, t, state):
    del t
    logits_fn = models.classifier(model, {"params": state.params,
                                          "batch_stats": state.batch_stats})
    scalars = {}
    for output in jc.outputs:
      norms = jacobian.jacobian_norms(logits_fn, x, y, output=output, norms=tuple(jc.norms),
                                      chunk_size=min(jc.chunk_size, len(y)),
                                      power_iters=jc.power_iters,
                                      key=jax.random.PRNGKey(jc.seed))
      scalars["jacobian/loss_grad"] = float(norms.pop("loss_grad").mean())
      scalars.update({f"jacobian/{output}/{k}": float(v.mean()) for k, v in norms.items()})
    writer.write_scalars(step, scalars)

  return track


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                       num_devices: int | None = None) -> dict[str, Any]:
  """Trains per `config` in `workdir` (resuming if it holds checkpoints); returns the final
  evaluation {"clean_accuracy", "pgd_accuracy", "mean_entropy", "num_examples", "step"}."""
  mesh = sharding.make_mesh(num_devices)
  config_lib.validate(config, mesh.devices.size)
  spec = data.get_spec(config.data.name)
  _check_workdir(workdir)
  logging.info("Loading %s", config.data.name)
  train_split = data.train_split(config.data)
  test_split = data.eval_split(config.data)  # the validation split when data.validation_size > 0
  # Only now touch the workdir: bad config or missing data leave it as it was.
  _prepare_workdir(workdir)
  is_chief = sharding.is_chief()
  num_steps = total_steps(config, len(train_split))

  model = build_model(config, spec)
  schedule = create_learning_rate_schedule(config.optimizer, num_steps)
  tx = create_optimizer(config.optimizer, schedule)
  state = create_train_state(config, model, spec, tx, mesh)
  mngr = checkpoints.manager(workdir, config.max_checkpoints)
  state = restore_or_keep(mngr, state, config,
                          quarantine=os.path.join(workdir, checkpoints.CORRUPT_DIR))
  initial_step = int(jax.device_get(state.step))
  if is_chief:  # after the restore, which rejects a config that does not fit the checkpoints
    with open(os.path.join(workdir, "config.json"), "w") as f:
      f.write(config.to_json_best_effort(indent=2, sort_keys=True))

  writer = metric_writers.MultiWriter([
      metric_writers.create_default_writer(workdir, just_logging=not is_chief,
                                           asynchronous=False),
      *([JsonlWriter(os.path.join(workdir, "metrics.jsonl"))] if is_chief else []),
  ])
  if initial_step == 0:
    writer.write_hparams(flatten_config(config))
  logging.info("Training %s (%s) on %s for %d steps from step %d on %d device(s)",
               config.model.name, config.method, config.data.name, num_steps, initial_step,
               mesh.devices.size)

  p_train_step = make_train_step(config, model, spec, schedule, mesh)
  pmap_mode = isinstance(p_train_step, PmapTrainStep)
  state = prepare_state(p_train_step, state)
  eval_model = build_model(config, spec, for_training=False)  # float32
  p_eval_step = make_eval_step(config, eval_model, mesh)
  report_progress = periodic_actions.ReportProgress(num_train_steps=num_steps, writer=writer,
                                                    every_steps=config.log_every_steps)
  pending = None  # clu metrics since the last log
  track_jacobian = None
  if config.jacobian.track_every_steps > 0:
    track_jacobian = periodic_actions.PeriodicCallback(
        every_steps=config.jacobian.track_every_steps, on_steps=[num_steps],
        callback_fn=_jacobian_tracker(config, eval_model, test_split, writer))

  pending_since = initial_step + 1  # the first step whose metrics are in `pending`

  def flush_train_metrics(step):
    nonlocal pending, pending_since
    if pending is None:
      return
    values = {k: float(v) for k, v in pending.compute().items()}
    _check_finite(values, pending_since, step, mngr.latest_step())
    writer.write_scalars(step, {f"train/{k}": v for k, v in values.items()})
    pending, pending_since = None, step + 1

  def save(step):
    flush_train_metrics(step)  # never checkpoint a state whose loss went non-finite
    mngr.save(step, args=ocp.args.StandardSave(export_state(p_train_step, state)))

  results = None
  t0 = time.time()
  with checkpoints.Preemption(mngr) as preemption:
    try:
      for step in range(initial_step, num_steps):
        batch = data.train_batch(train_split, config.seed, step, config.batch_size)
        if not pmap_mode:  # pmap splits the host batch itself
          batch = sharding.shard_batch(batch, mesh)
        with jax.profiler.StepTraceAnnotation("train", step_num=step):
          state, step_metrics = p_train_step(state, batch)
        collection = _metrics_collection(step_metrics).single_from_model_output(**step_metrics)
        pending = collection if pending is None else pending.merge(collection)
        done = step + 1
        report_progress(done)
        if track_jacobian is not None:
          with report_progress.timed("jacobian"):
            track_jacobian(done, state=export_state(p_train_step, state))
        is_last = done == num_steps
        if done % config.log_every_steps == 0 or is_last:
          flush_train_metrics(done)
        if done % config.eval.every_steps == 0 or is_last:
          with report_progress.timed("eval"):
            results = evaluate(p_eval_step, export_state(p_train_step, state), test_split,
                               config, mesh)
          writer.write_scalars(done, {f"eval/{k}": v for k, v in results.items()})
        stop = preemption.requested(done)
        if done % config.checkpoint_every_steps == 0 or is_last or stop:
          save(done)
        if stop and not is_last:  # the `finally` waits for the save before this reaches anyone
          writer.flush()
          raise Preempted(done, str(mngr.directory))
    finally:  # a save in flight completes (or is left unfinalized, never half-visible)
      mngr.wait_until_finished()
  writer.flush()
  if results is None:  # nothing left to train: evaluate the restored state
    results = evaluate(p_eval_step, export_state(p_train_step, state), test_split, config, mesh)
  results["step"] = num_steps
  logging.info("Finished %d steps in %.1f s", num_steps - initial_step, time.time() - t0)
  return results
