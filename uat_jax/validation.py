"""Checks a config's values before a command uses them: ranges, names, the evaluator instances
and the best-checkpoint metric. Types and field names are the locked ConfigDict's business.
Called by the entry points (train, evaluate, study), never by config files, which import
ml_collections only."""

from __future__ import annotations

import math

import jax
import ml_collections

from uat_jax import attacks, data, evaluate, jacobian, losses, models, optimizers
from uat_jax import config as config_lib
from uat_jax.errors import UatError


def _require(ok: bool, message: str) -> None:
  if not ok:
    raise UatError(message)


def _check_finite(node, prefix: str = "") -> None:
  """Every number of the config is finite (nan and inf pass most range checks)."""
  for key, value in node.items():
    if isinstance(value, ml_collections.ConfigDict):
      _check_finite(value, f"{prefix}{key}.")
    elif isinstance(value, (tuple, list)):
      for v in value:
        _require(not isinstance(v, float) or math.isfinite(v),
                 f"{prefix}{key}={tuple(value)} must hold finite numbers")
    elif isinstance(value, float):
      _require(math.isfinite(value), f"{prefix}{key}={value} must be a finite number")


def validate(c, num_devices: int = 1) -> None:
  """Checks values (types and key names are checked by the locked ConfigDict)."""
  _check_finite(c)
  adversarial, _ = losses.method_parts(c.method)
  _require(0 <= c.seed < 2 ** 32, f"seed={c.seed} must be in [0, 2**32) (--config.seed)")
  data.get_spec(c.data.name)
  _require(c.model.name in models.MODELS,
           f"unknown model {c.model.name!r}: choose one of {sorted(models.MODELS)} "
           "(--config.model.name)")
  _require(c.data.validation_size >= 0,
           f"data.validation_size={c.data.validation_size} must be >= 0 (0: evaluate on test)")
  _require(c.data.train_size >= 0,
           f"data.train_size={c.data.train_size} must be >= 0 (0: every training example)")
  _require(c.data.augment in ("default", "none", "crop", "crop_flip"),
           f"unknown data.augment {c.data.augment!r}: choose default, none, crop or crop_flip")
  lower = max(num_devices, c.batch_size - c.batch_size % num_devices)
  _require(c.batch_size > 0 and c.batch_size % num_devices == 0,
           f"batch_size={c.batch_size} must be a positive multiple of the {num_devices} devices: "
           f"use {lower} or {lower + num_devices} (--config.batch_size={lower + num_devices})")
  _require(c.dtype in ("float32", "bfloat16", "float64"),
           f"unknown dtype {c.dtype!r}: choose float32, bfloat16 or float64 (--config.dtype)")
  _require(c.dtype != "float64" or jax.config.jax_enable_x64,
           "dtype=float64 needs 64-bit JAX: set the environment variable JAX_ENABLE_X64=1 "
           "(float64 compute is for numerical checks; float32 is the default)")
  _require(c.parallelism in ("jit", "pmap"),
           f"unknown parallelism {c.parallelism!r}: choose jit or pmap (--config.parallelism)")
  _require(c.num_train_steps > 0 or c.num_epochs > 0,
           "set a positive --config.num_train_steps or --config.num_epochs")
  _require(c.num_train_steps <= 0 or c.num_train_steps < 2 ** 31,
           f"num_train_steps={c.num_train_steps} must be below 2**31")
  _require(isinstance(c.attack.eps, (int, float)),
           f"attack.eps={c.attack.eps!r} must be a number, e.g. 0.1 or 8/255")
  attacks.check_eps(c.attack.eps)
  _require(c.attack.step_size >= 0 and math.isfinite(c.attack.step_size),
           f"attack.step_size={c.attack.step_size} must be >= 0")
  _require(not adversarial or c.attack.steps >= 1,
           f"attack.steps={c.attack.steps} must be >= 1 for method {c.method!r}")
  _require(c.attack.loss in ("ce", "objective"),
           f"unknown attack.loss {c.attack.loss!r}: choose ce or objective")
  _require(c.attack.bn_mode in ("train", "eval"),
           f"unknown attack.bn_mode {c.attack.bn_mode!r}: choose train or eval")
  u = c.attack.unroll
  _require(isinstance(u, bool) or u >= 1,
           f"attack.unroll={u} must be a number of steps >= 1 or True (all)")
  _require(c.model.depth >= 10 and (c.model.depth - 4) % 6 == 0,
           f"model.depth={c.model.depth} must be 6n + 4 with n >= 1 (10, 16, 22, 28, 34, ...)")
  _require(c.model.width >= 1, f"model.width={c.model.width} must be >= 1")
  _require(c.regularizer.beta >= 0, f"regularizer.beta={c.regularizer.beta} must be >= 0")
  _require(0 <= c.regularizer.alpha < 1,
           f"regularizer.alpha={c.regularizer.alpha} must be in [0, 1)")
  _require(c.regularizer.on in losses.REGULARIZER_ON,
           f"unknown regularizer.on {c.regularizer.on!r}: choose one of {losses.REGULARIZER_ON}")
  o = c.optimizer
  _require(o.name in config_lib.OPTIMIZERS,
           f"unknown optimizer {o.name!r}: choose one of {config_lib.OPTIMIZERS}")
  _require(o.schedule in config_lib.SCHEDULES,
           f"unknown optimizer.schedule {o.schedule!r}: choose one of {config_lib.SCHEDULES}")
  _require(o.learning_rate > 0, f"optimizer.learning_rate={o.learning_rate} must be > 0")
  _require(o.weight_decay >= 0, f"optimizer.weight_decay={o.weight_decay} must be >= 0")
  _require(0 <= o.momentum < 1, f"optimizer.momentum={o.momentum} must be in [0, 1)")
  _require(o.decay_factor > 0, f"optimizer.decay_factor={o.decay_factor} must be > 0")
  _require(0 <= optimizers.averaging_decay(o) < 1,
           f"optimizer.weight_average={optimizers.averaging_decay(o)} must be in [0, 1) (0: none; "
           "0.999 averages over about the last 1,000 steps)")
  _require(o.warmup_steps >= 0, f"optimizer.warmup_steps={o.warmup_steps} must be >= 0")
  _require(all(0 < b < 1 for b in o.boundaries),
           f"optimizer.boundaries={tuple(o.boundaries)} must be fractions of training in (0, 1)")
  for name in ("log_every_steps", "checkpoint_every_steps", "max_checkpoints"):
    _require(c[name] >= 1, f"{name}={c[name]} must be >= 1")
  validate_evals(c)
  validate_best_checkpoint(c)


def validate_best_checkpoint(c) -> None:
  b = c.best_checkpoint
  if not b.metric:
    return
  _require(b.mode in ("max", "min"),
           f"best_checkpoint.mode={b.mode!r}: choose max or min")
  owners = {config_lib.scalar_prefix(n, ev.type): n for n, ev in config_lib.evaluators(c).items()}
  owner = owners.get(b.metric.split("/")[0])
  _require(owner is not None,
           f"best_checkpoint.metric={b.metric!r} is no evaluator's scalar: use e.g. "
           "eval/pgd_accuracy (pgd), suite/worst_case@0.1 (suite) or jacobian/loss_grad")
  _require(c.evals[owner].every_steps > 0,
           f"best_checkpoint.metric={b.metric!r} comes from the {owner} evaluator, which does not "
           f"run during training: set --config.evals.{owner}.every_steps > 0")
  _require(c.data.validation_size > 0,
           "best_checkpoint selects on the evaluation split, which is the test split unless "
           "data.validation_size > 0: set --config.data.validation_size (e.g. 5000) so that the "
           "test split stays untouched")


def evaluated_step(c):
  """config.evals.checkpoint as classifier.load takes it: "last", "best" or an int step."""
  value = str(c.evals.checkpoint).strip()
  if value in ("last", "best"):
    return value
  try:
    return int(value)
  except ValueError:
    raise UatError(f"evals.checkpoint={value!r}: choose last, best or a step number "
                   "(--config.evals.checkpoint=best)") from None


def validate_evals(c) -> None:
  """Checks config.evals: the instances' types, periods, sizes and parameters."""
  e = c.evals
  instances = config_lib.evaluators(c)
  for name in config_lib.names(e.on_evaluate):
    _require(name in instances, f"unknown evaluator {name!r} in evals.on_evaluate: choose from "
             f"{sorted(instances)} (--config.evals.on_evaluate=suite,jacobian)")
  outputs: dict[str, str] = {}
  for name, ev in instances.items():
    _require(ev.type in config_lib.EVALUATOR_TYPES,
             f"evals.{name}.type={ev.type!r}: choose one of {sorted(config_lib.EVALUATOR_TYPES)}")
    _require(ev.every_steps >= 0,
             f"evals.{name}.every_steps={ev.every_steps} must be >= 0 (0 = not during training)")
    _require(ev.num_examples >= 0,
             f"evals.{name}.num_examples={ev.num_examples} must be >= 0 (0 = all)")
    if ev.type in ("pgd", "suite"):
      _require(ev.batch_size > 0, f"evals.{name}.batch_size={ev.batch_size} must be > 0 "
               f"(--config.evals.{name}.batch_size)")
    if ev.type in ("suite", "jacobian"):
      _require(0 <= ev.seed < 2 ** 32, f"evals.{name}.seed={ev.seed} must be in [0, 2**32) "
               f"(--config.evals.{name}.seed)")
    if ev.type == "pgd":
      _require(ev.steps >= 0, f"evals.{name}.steps={ev.steps} must be >= 0")
    elif ev.type == "suite":
      _require(all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in ev.eps),
               f"evals.{name}.eps={tuple(ev.eps)} must hold numbers on the [0, 1] scale, e.g. "
               f"--config.evals.{name}.eps=0.1,0.2 or 4/255,8/255")
      for eps in ev.eps:
        attacks.check_eps(eps)
      evaluate.resolve_suite(evaluate.suite_entries(ev), ev.only_robust)
      _require(ev.output not in outputs, f"evals.{name} and evals.{outputs.get(ev.output)} both "
               f"write to eval/{ev.output}: give one another output (--config.evals.{name}.output)")
      outputs[ev.output] = name
    else:
      for output in ev.outputs:
        jacobian.check(output, ev.norms)
      for field in ("chunk_size", "power_iters"):
        _require(ev[field] >= 1, f"evals.{name}.{field}={ev[field]} must be >= 1")
  evaluated_step(c)
  _require(e.split in ("test", "validation"),
           f"evals.split={e.split!r}: choose test or validation")
  _require(e.split == "test" or c.data.validation_size > 0,
           "evals.split=validation needs held-out examples: set --config.data.validation_size")
