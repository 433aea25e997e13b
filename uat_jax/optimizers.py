"""The optimizer of a run from config.optimizer: its learning-rate schedule and the optax
transformation (SGD or Adam, PyTorch-style weight decay, optionally weight averaging)."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from uat_jax.errors import UatError


def learning_rate_schedule(opt_config, num_steps: int) -> optax.Schedule:
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


def optimizer(opt_config, schedule: optax.Schedule) -> optax.GradientTransformation:
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
  decay = averaging_decay(opt_config)
  if decay > 0:
    opt = optax.chain(opt, weight_average(decay))
  return opt


def averaging_decay(opt_config) -> float:
  """config.optimizer.weight_average: the decay of the weight average, 0 for none (also for a
  run's config.json written before the field existed)."""
  return opt_config.get("weight_average", 0.0)


class WeightAverageState(NamedTuple):
  average: Any  # the parameters' exponential moving average, shaped like them


def weight_average(decay: float) -> optax.GradientTransformation:
  """Keeps an exponential moving average of the parameters in the optimizer state (Polyak
  averaging): after each update, average <- decay * average + (1 - decay) * new parameters,
  starting from the initial parameters. Updates pass through unchanged; chain it last, so that
  it sees the final updates. `averaged_params` reads the average back."""

  def init(params):
    return WeightAverageState(jax.tree.map(jnp.copy, params))

  def update(updates, state, params=None):
    if params is None:
      raise UatError("weight_average needs the parameters: call tx.update(grads, state, params)")
    return updates, WeightAverageState(
        moving_average(state.average, optax.apply_updates(params, updates), decay))

  return optax.GradientTransformation(init, update)


def moving_average(average, new, decay: float):
  """decay * average + (1 - decay) * new, leaf by leaf, in the average's dtypes."""
  return jax.tree.map(lambda a, p: (decay * a + (1 - decay) * p).astype(a.dtype), average, new)


def averaged_params(params, opt_state):
  """The parameters to evaluate: the average `weight_average` keeps in `opt_state`, or `params`
  when the optimizer keeps none."""
  state = optax.tree_utils.tree_get(opt_state, "WeightAverageState")
  return params if state is None else state.average
