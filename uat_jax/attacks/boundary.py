"""FAB-T (Croce & Hein 2020, "fast adaptive boundary"), L-inf: the minimal-distortion targeted
attack."""

from __future__ import annotations

from typing import Optional, Union

import jax
import jax.numpy as jnp

from uat_jax.attacks.common import (LogitsFn, check_eps, check_inputs, default_key, project_linf,
                                    where_example)
from uat_jax.errors import UatError


def _linf_plane_point(w: jax.Array, c: jax.Array, lo: jax.Array, hi: jax.Array,
                      iters: int = 30) -> jax.Array:
  """Per row of w [B, D]: the delta of smallest L-inf norm with w . delta = c and lo <= delta <=
  hi (lo <= 0 <= hi: the [0, 1] box around the current point), or, where the box cannot reach
  the plane, the box point that gets closest. Moving coordinate i by up to r in the direction
  sign(c w_i) changes w . delta by sum_i |w_i| min(r, room_i), a non-decreasing function of r;
  its smallest r reaching |c| is found by bisection (`iters` halvings of [0, max room])."""
  s = jnp.sign(c)[:, None] * jnp.sign(w)
  room = jnp.where(s > 0, hi, -lo)
  weight, target = jnp.abs(w), jnp.abs(c)

  def reach(r):
    return jnp.sum(weight * jnp.minimum(r[:, None], room), axis=1)

  def halve(_, bounds):
    low, high = bounds
    mid = 0.5 * (low + high)
    ok = reach(mid) >= target
    return jnp.where(ok, low, mid), jnp.where(ok, mid, high)

  high = jnp.max(room, axis=1)
  _, r = jax.lax.fori_loop(0, iters, halve, (jnp.zeros_like(high), high))
  return s * jnp.minimum(r[:, None], room)


def fab_minimal(logits_fn: LogitsFn, x: jax.Array, y: jax.Array, targets: jax.Array, *,
                key: jax.Array, steps: int = 100, restarts: int = 1,
                start_radius: Union[float, jax.Array] = 0.0, alpha_max: float = 0.1,
                eta: float = 1.05, beta: float = 0.9) -> jax.Array:
  """Targeted FAB, L-inf (Croce & Hein 2020, "fast adaptive boundary"): for each example, the
  misclassified point of smallest L-inf distance to x that the search finds, or x itself where
  it finds none.

  Each step linearizes the boundary between the true class y and the target at the current
  point, projects both the current point and x onto that hyperplane (inside [0, 1]), and moves
  to a mix of the two projections, weighted toward x's by at most `alpha_max` and extrapolated
  by `eta`; a misclassified point is recorded if closer than the best so far, then pulled back
  toward x by `beta`. The first run starts at x; later restarts start at random points within
  `start_radius` / 2 (L-inf)."""
  b = x.shape[0]
  pick = lambda z, c: jnp.take_along_axis(z, c[:, None], -1)[:, 0]

  def difference(v):
    def total(u):
      z = logits_fn(u)
      d = pick(z, targets) - pick(z, y)
      return jnp.sum(d), d
    (_, d), g = jax.value_and_grad(total, has_aux=True)(v)
    return d, g.reshape(b, -1)

  def fooled(v):
    return jnp.argmax(logits_fn(v), -1) != y

  flat_x = x.reshape(b, -1)

  def step(_, s):
    xk = s["x"].reshape(b, -1)
    d, w = difference(s["x"])
    delta_k = _linf_plane_point(w, -d, -xk, 1.0 - xk)
    delta_0 = _linf_plane_point(w, -d - jnp.sum(w * (flat_x - xk), axis=1), -flat_x, 1.0 - flat_x)
    norm_k, norm_0 = jnp.max(jnp.abs(delta_k), 1), jnp.max(jnp.abs(delta_0), 1)
    alpha = jnp.minimum(norm_k / (norm_k + norm_0 + 1e-12), alpha_max)[:, None]
    new = jnp.clip((1 - alpha) * (xk + eta * delta_k) + alpha * (flat_x + eta * delta_0), 0, 1)
    new = new.reshape(x.shape)
    hit = fooled(new)
    dist = jnp.max(jnp.abs(new - x).reshape(b, -1), 1)
    better = hit & (dist < s["best_dist"])
    back = (1 - beta) * x + beta * new
    return {"x": where_example(hit, back, new), "best": where_example(better, new, s["best"]),
            "best_dist": jnp.where(better, dist, s["best_dist"])}

  start_fooled = fooled(x)
  state = {"x": x, "best": x, "best_dist": jnp.where(start_fooled, 0.0, jnp.inf)}
  state = jax.lax.fori_loop(0, steps, step, state)
  for i in range(1, restarts):
    radius = jnp.minimum(state["best_dist"], start_radius).reshape((-1,) + (1,) * (x.ndim - 1))
    u = jax.random.uniform(jax.random.fold_in(key, i), x.shape, x.dtype, -1.0, 1.0)
    u = u / (jnp.max(jnp.abs(u).reshape(b, -1), 1).reshape(radius.shape) + 1e-12)
    state = jax.lax.fori_loop(0, steps, step,
                              {**state, "x": jnp.clip(x + 0.5 * radius * u, 0.0, 1.0)})
  return state["best"]


def fab_targeted(logits_fn: LogitsFn, x: jax.Array, y: jax.Array, *,
                 key: Optional[jax.Array] = None,
                 eps: float, steps: int = 100, num_targets: int = 9,
                 restarts: int = 1) -> jax.Array:
  """FAB-T, L-inf (Croce & Hein 2020, as in AutoAttack's standard sequence): fab_minimal toward
  each of the `num_targets` classes with the highest clean logits after the top one. Each
  example keeps the first target whose minimal adversarial point lies within eps; the result is
  projected onto the eps-ball (and [0, 1]), so it is adversarial exactly where FAB found a point
  at distance <= eps."""
  key = default_key(key)
  check_eps(eps)
  x, y = check_inputs(x, y)
  x = jnp.asarray(x, jnp.float32)
  num_classes = jax.eval_shape(logits_fn, x[:1]).shape[-1]
  if not 1 <= num_targets <= num_classes - 1 or steps < 1 or restarts < 1:
    raise UatError(f"FAB-T needs 1 <= num_targets <= {num_classes - 1}, steps >= 1 and "
                   f"restarts >= 1, got num_targets={num_targets}, steps={steps}, "
                   f"restarts={restarts}")
  order = jax.lax.top_k(logits_fn(x), num_targets + 1)[1]

  def per_target(t, carry):
    best, done = carry
    cand = project_linf(fab_minimal(logits_fn, x, y, order[:, t + 1],
                                    key=jax.random.fold_in(key, t), steps=steps,
                                    restarts=restarts, start_radius=eps), x, eps)
    hit = jnp.argmax(logits_fn(cand), -1) != y
    return where_example(~done, cand, best), done | hit

  return jax.lax.fori_loop(0, num_targets, per_target, (x, jnp.zeros(x.shape[0], bool)))[0]

