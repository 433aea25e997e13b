"""Adversarial attacks on any JAX classifier given as `logits_fn(x) -> logits`.

Images are float32 NHWC in [0, 1] and eps is on that scale. Attacks are pure, jittable and
deterministic in their key; their output always satisfies |x_adv - x|_inf <= eps and
0 <= x_adv <= 1. The same `pgd` serves adversarial training and evaluation.
"""

from __future__ import annotations

from typing import Callable, Union

import jax
import jax.numpy as jnp

from uat_jax import losses
from uat_jax.errors import UatError

LogitsFn = Callable[[jax.Array], jax.Array]
PerExampleLoss = Callable[[jax.Array, jax.Array], jax.Array]

LOSSES: dict[str, PerExampleLoss] = {
    "ce": losses.cross_entropy,
}


def resolve_loss(loss: Union[str, PerExampleLoss]) -> PerExampleLoss:
  """A loss name from LOSSES or a callable `loss(logits, labels) -> [B]` to maximize."""
  if callable(loss):
    return loss
  if loss not in LOSSES:
    raise UatError(f"unknown attack loss {loss!r}: choose one of {sorted(LOSSES)} or pass a "
                   "callable loss(logits, labels) -> per-example loss")
  return LOSSES[loss]


def check_eps(eps) -> None:
  """Raises a clear error for an eps outside [0, 1] (images live in [0, 1])."""
  if isinstance(eps, (int, float)) and not 0.0 <= eps <= 1.0:
    raise UatError(f"eps={eps} is outside [0, 1]; eps is on the [0, 1] image scale "
                   "(e.g. 0.1 or 8/255)")


def project_linf(x_adv: jax.Array, x: jax.Array, eps) -> jax.Array:
  """Projects onto the intersection of the L-inf eps-ball around x and the [0, 1] box."""
  return jnp.clip(x_adv, jnp.maximum(x - eps, 0.0), jnp.minimum(x + eps, 1.0))


def pgd(logits_fn: LogitsFn, x: jax.Array, y: jax.Array, *, key: jax.Array, eps: float,
        step_size: float, steps: int, loss: Union[str, PerExampleLoss] = "ce",
        random_start: bool = True, unroll: Union[int, bool] = 1) -> jax.Array:
  """L-inf projected gradient ascent (Madry et al. 2018) on a per-example loss.

  Starts from a uniform random point in the eps-ball (projected into [0, 1]) when
  `random_start`, then takes `steps` signed-gradient steps of `step_size`, projecting after each.
  The step loop is a `lax.fori_loop`; `unroll` (an int, or True for fully unrolled) trades
  compile time for speed on XLA:CPU.
  """
  check_eps(eps)
  if steps < 0:
    raise UatError(f"PGD steps must be >= 0, got {steps}")
  loss_fn = resolve_loss(loss)
  x = jnp.asarray(x, jnp.float32)
  grad_fn = jax.grad(lambda xa: jnp.sum(loss_fn(logits_fn(xa), y)))

  if random_start:
    x0 = project_linf(x + jax.random.uniform(key, x.shape, x.dtype, -eps, eps), x, eps)
  else:
    x0 = x

  def step(_, xa):
    return project_linf(xa + step_size * jnp.sign(grad_fn(xa)), x, eps)

  return jax.lax.fori_loop(0, steps, step, x0, unroll=unroll)
