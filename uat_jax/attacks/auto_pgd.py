"""Auto-PGD (Croce & Hein 2020): APGD with a step size that adapts at checkpoints, untargeted and
targeted (APGD-T over the top classes)."""

from __future__ import annotations

from typing import Optional, Union

import jax
import jax.numpy as jnp

from uat_jax.attacks.common import (LogitsFn, PROJECTIONS, PerExampleLoss, ascent_direction,
                                    best_of_restarts, check_inputs, checked, default_key,
                                    resolve_unroll, targeted_dlr_loss, uniform_start, where_example)
from uat_jax.errors import UatError


def apgd_checkpoints(steps: int) -> list[tuple[int, int]]:
  """APGD's step-size checkpoints as (iteration, window length): the first after 22% of the
  iterations, then windows shrinking by 3% of the iterations down to 6% (Croce & Hein 2020)."""
  window = max(int(0.22 * steps), 1)
  shrink, smallest = max(int(0.03 * steps), 1), max(int(0.06 * steps), 1)
  out, at = [], window
  while at <= steps:
    out.append((at, window))
    window = max(window - shrink, smallest)
    at += window
  return out


def apgd(logits_fn: LogitsFn, x: jax.Array, y: jax.Array, *, eps: float,
         key: Optional[jax.Array] = None, steps: int = 100, norm: str = "linf",
         loss: Union[str, PerExampleLoss] = "ce",
         restarts: int = 1, rho: float = 0.75, momentum: float = 0.75,
         unroll: Union[int, bool] = 1) -> jax.Array:
  """Auto-PGD (Croce & Hein 2020): PGD with momentum and no step-size parameter.

  The step size starts at 2 eps; at each checkpoint (apgd_checkpoints) it halves for the
  examples whose loss rose in at most a fraction `rho` of the steps since the last checkpoint, or
  whose best loss did not improve since then without a halving, and those examples restart from
  their best point. Each example returns its first misclassified iterate, or else its
  highest-loss one. Use loss="ce" (APGD-CE), "dlr" (APGD-DLR) or any per-example loss; see
  apgd_targeted for APGD-T.
  """
  key = default_key(key)
  loss_fn, x, y = checked("APGD", x, y, eps, norm, loss, steps, restarts, min_steps=1)
  project = PROJECTIONS[norm]
  b = x.shape[0]
  ckpt = dict(apgd_checkpoints(steps))
  is_ckpt = jnp.asarray([i + 1 in ckpt for i in range(steps)])
  window = jnp.asarray([ckpt.get(i + 1, 1) for i in range(steps)], jnp.float32)

  def value_and_grad(xa):
    def total(v):
      logits = logits_fn(v)
      per_example = loss_fn(logits, y)
      return jnp.sum(per_example), (per_example, logits)
    (_, (f, logits)), g = jax.value_and_grad(total, has_aux=True)(xa)
    return f, g, jnp.argmax(logits, -1) != y

  def step(i, s):
    a = jnp.where(i == 0, 1.0, momentum)
    eta = s["eta"].reshape((-1,) + (1,) * (x.ndim - 1))
    z = project(s["x"] + eta * ascent_direction(s["g"], norm), x, eps)
    x_new = project(s["x"] + a * (z - s["x"]) + (1 - a) * (s["x"] - s["x_prev"]), x, eps)
    f, g, fooled = value_and_grad(x_new)
    first_fool = fooled & ~s["fooled"]
    improved = f > s["f_best"]
    s = {**s, "x_prev": s["x"], "x": x_new, "g": g, "count": s["count"] + (f > s["f"]),
         "f": f, "x_adv": where_example(first_fool, x_new, s["x_adv"]),
         "fooled": s["fooled"] | fooled, "x_best": where_example(improved, x_new, s["x_best"]),
         "g_best": where_example(improved, g, s["g_best"]),
         "f_best": jnp.where(improved, f, s["f_best"])}
    halve = (s["count"] <= rho * window[i]) | (~s["halved"] & (s["f_best_ckpt"] >= s["f_best"]))
    halve = halve & is_ckpt[i]
    return {**s, "eta": jnp.where(halve, s["eta"] / 2, s["eta"]),
            "x": where_example(halve, s["x_best"], s["x"]),
            "g": where_example(halve, s["g_best"], s["g"]),
            "halved": jnp.where(is_ckpt[i], halve, s["halved"]),
            "f_best_ckpt": jnp.where(is_ckpt[i], s["f_best"], s["f_best_ckpt"]),
            "count": jnp.where(is_ckpt[i], 0.0, s["count"])}

  def one_run(k):
    x0 = uniform_start(k, x, eps, norm)
    f, g, fooled = value_and_grad(x0)
    s = {"x": x0, "x_prev": x0, "g": g, "f": f, "x_best": x0, "g_best": g, "f_best": f,
         "f_best_ckpt": f, "x_adv": x0, "fooled": fooled, "count": jnp.zeros(b),
         "halved": jnp.zeros(b, bool), "eta": jnp.full((b,), 2.0 * eps, jnp.float32)}
    s = jax.lax.fori_loop(0, steps, step, s, unroll=resolve_unroll(unroll))
    return where_example(s["fooled"], s["x_adv"], s["x_best"])

  return best_of_restarts(logits_fn, loss_fn, x, y, one_run, key, restarts)


def apgd_targeted(logits_fn: LogitsFn, x: jax.Array, y: jax.Array, *,
                  key: Optional[jax.Array] = None, eps: float, steps: int = 100,
                  norm: str = "linf", num_targets: int = 9,
                  unroll: Union[int, bool] = 1) -> jax.Array:
  """APGD-T (Croce & Hein 2020): APGD on the targeted DLR loss, once per target class, the
  targets being the `num_targets` classes with the highest clean logits after the top one. Each
  example keeps the first run that misclassified it, or else its result for the last target."""
  key = default_key(key)
  x, y = check_inputs(x, y)
  num_classes = jax.eval_shape(logits_fn, jnp.asarray(x[:1], jnp.float32)).shape[-1]
  if num_classes < 4 or not 1 <= num_targets <= num_classes - 1:
    raise UatError(f"APGD-T needs >= 4 classes and 1 <= num_targets <= {num_classes - 1}, got "
                   f"{num_classes} classes and num_targets={num_targets}")
  x = jnp.asarray(x, jnp.float32)
  order = jax.lax.top_k(logits_fn(x), num_targets + 1)[1]

  def per_target(t, carry):
    best, fooled = carry
    targets = order[:, t + 1]
    cand = apgd(logits_fn, x, y, key=jax.random.fold_in(key, t), eps=eps, steps=steps, norm=norm,
                loss=lambda z, lab: targeted_dlr_loss(z, lab, targets), unroll=unroll)
    cand_fooled = jnp.argmax(logits_fn(cand), -1) != y
    take = ~fooled
    return where_example(take, cand, best), fooled | cand_fooled

  return jax.lax.fori_loop(0, num_targets, per_target, (x, jnp.zeros(x.shape[0], bool)))[0]

