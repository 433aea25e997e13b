"""Gradient attacks of the PGD family: FGSM, PGD with restarts (the attack adversarial training
uses) and the transfer attack (PGD on a surrogate model)."""

from __future__ import annotations

from typing import Optional, Union

import jax
import jax.numpy as jnp

from uat_jax.attacks.common import (PROJECTIONS, LogitsFn, PerExampleLoss, ascent_direction,
                                    best_of_restarts, check_eps, check_inputs, checked,
                                    default_key,
                                    input_grad, project_linf, resolve_loss, resolve_unroll,
                                    uniform_start)


def fgsm(logits_fn: LogitsFn, x: jax.Array, y: jax.Array, *, eps: float,
         loss: Union[str, PerExampleLoss] = "ce") -> jax.Array:
  """Fast gradient sign method (Goodfellow et al. 2015): one L-inf step of size eps from x."""
  check_eps(eps)
  x, y = check_inputs(x, y)
  x = jnp.asarray(x, jnp.float32)
  g = input_grad(logits_fn, resolve_loss(loss), y)(x)
  return project_linf(x + eps * jnp.sign(g), x, eps)


def pgd(logits_fn: LogitsFn, x: jax.Array, y: jax.Array, *, eps: float,
        key: Optional[jax.Array] = None, step_size: Optional[float] = None, steps: int = 10,
        norm: str = "linf", loss: Union[str, PerExampleLoss] = "ce", restarts: int = 1,
        random_start: bool = True, unroll: Union[int, bool] = 1) -> jax.Array:
  """Projected gradient ascent (Madry et al. 2018) on a per-example loss, L-inf or L2.

  Each restart starts from a uniform random point of the eps-ball (projected into [0, 1]) when
  `random_start`, then takes `steps` steps of `step_size` (signed gradient for L-inf, normalized
  gradient for L2), projecting after each. With several restarts, each example keeps the restart
  that misclassified it, or else the one with the highest loss. The step loop is a
  `lax.fori_loop`; `unroll` (an int, or True for fully unrolled) trades compile time for speed.
  Defaults: `step_size` eps/4 (as the presets use), 10 steps, `key` PRNGKey(0).
  """
  loss_fn, x, y = checked("PGD", x, y, eps, norm, loss, steps, restarts, min_steps=0)
  key = default_key(key)
  step_size = eps / 4 if step_size is None else step_size
  grad_fn = input_grad(logits_fn, loss_fn, y)
  project = PROJECTIONS[norm]

  def step(_, xa):
    return project(xa + step_size * ascent_direction(grad_fn(xa), norm), x, eps)

  def one_run(k):
    x0 = uniform_start(k, x, eps, norm) if random_start else x
    return jax.lax.fori_loop(0, steps, step, x0, unroll=resolve_unroll(unroll))

  return best_of_restarts(logits_fn, loss_fn, x, y, one_run, key, restarts)


def transfer(surrogate_logits_fn: LogitsFn, x: jax.Array, y: jax.Array, *, key: jax.Array,
             eps: float, steps: int = 20, step_size: Union[float, None] = None,
             loss: Union[str, PerExampleLoss] = "ce", restarts: int = 1,
             unroll: Union[int, bool] = 1) -> jax.Array:
  """Transfer (black-box) attack: L-inf PGD on a surrogate model (e.g. another workdir's
  checkpoint loaded with uat_jax.load); feed the result to the target model."""
  return pgd(surrogate_logits_fn, x, y, key=key, eps=eps,
             step_size=eps / 4 if step_size is None else step_size, steps=steps, loss=loss,
             restarts=restarts, unroll=unroll)
