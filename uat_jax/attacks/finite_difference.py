"""SPSA (Uesato et al. 2018): a gradient-free attack from finite-difference gradient estimates."""

from __future__ import annotations

from typing import Union

import jax
import jax.numpy as jnp
import optax

from uat_jax.attacks.common import (LogitsFn, PerExampleLoss, check_eps, check_inputs,
                                    project_linf, resolve_loss, uniform_start, where_example)
from uat_jax.errors import UatError


def spsa(logits_fn: LogitsFn, x: jax.Array, y: jax.Array, *, key: jax.Array, eps: float,
         steps: int = 100, samples: int = 128, delta: float = 0.01,
         learning_rate: float = 0.01, loss: Union[str, PerExampleLoss] = "cw",
         sample_batch: int = 32) -> jax.Array:
  """SPSA (Uesato et al. 2018), L-inf: a gradient-free attack. Each step estimates the gradient
  of the loss from `samples` Rademacher directions v as mean((f(x + delta v) - f(x - delta v)) /
  (2 delta) v), takes an Adam step (optax) of `learning_rate`, and projects. `sample_batch`
  directions are evaluated per forward pass. Each example returns its first misclassified
  iterate, or else the last one."""
  check_eps(eps)
  x, y = check_inputs(x, y)
  if steps < 1 or samples < 1 or not delta > 0:
    raise UatError(f"SPSA needs steps >= 1, samples >= 1 and delta > 0, got steps={steps}, "
                   f"samples={samples}, delta={delta}")

  loss_fn = resolve_loss(loss)
  x = jnp.asarray(x, jnp.float32)
  opt = optax.adam(learning_rate)
  k0, key = jax.random.split(key)
  x0 = uniform_start(k0, x, eps)

  def fooled(xa):
    return jnp.argmax(logits_fn(xa), -1) != y

  def step(i, carry):
    xa, opt_state, x_adv, done = carry
    v = jax.random.rademacher(jax.random.fold_in(key, i), (samples,) + x.shape, jnp.float32)

    def estimate(vi):
      diff = loss_fn(logits_fn(xa + delta * vi), y) - loss_fn(logits_fn(xa - delta * vi), y)
      return (diff / (2 * delta)).reshape((-1,) + (1,) * (x.ndim - 1)) * vi

    g = jnp.mean(jax.lax.map(estimate, v, batch_size=min(sample_batch, samples)), axis=0)
    updates, opt_state = opt.update(-g, opt_state, xa)  # optax minimizes: ascend the loss
    xa = project_linf(xa + updates, x, eps)
    now = fooled(xa)
    return xa, opt_state, where_example(now & ~done, xa, x_adv), done | now

  carry = (x0, opt.init(x0), x0, fooled(x0))
  xa, _, x_adv, done = jax.lax.fori_loop(0, steps, step, carry)
  return where_example(done, x_adv, xa)

