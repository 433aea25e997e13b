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

def margin_loss(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """Carlini-Wagner margin max_{j != y} z_j - z_y (positive iff misclassified)."""
  onehot = jax.nn.one_hot(labels, logits.shape[-1], dtype=bool)
  z_y = jnp.sum(jnp.where(onehot, logits, 0.0), axis=-1)
  z_other = jnp.max(jnp.where(onehot, -jnp.inf, logits), axis=-1)
  return z_other - z_y


def dlr_loss(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """Difference of logits ratio (Croce & Hein 2020), untargeted:
  -(z_y - max_{j != y} z_j) / (z_pi1 - z_pi3 + 1e-12), pi sorting the logits descending.
  Invariant to shifting and scaling the logits, so saturated softmaxes do not hide gradients."""
  top = jax.lax.top_k(logits, 3)[0]
  return margin_loss(logits, labels) / (top[..., 0] - top[..., 2] + 1e-12)


LOSSES: dict[str, PerExampleLoss] = {
    "ce": losses.cross_entropy,
    "cw": margin_loss,
    "dlr": dlr_loss,
}
NORMS = ("linf", "l2")


def resolve_loss(loss: Union[str, PerExampleLoss]) -> PerExampleLoss:
  """A loss name from LOSSES or a callable `loss(logits, labels) -> [B]` to maximize."""
  if callable(loss):
    return loss
  if loss not in LOSSES:
    raise UatError(f"unknown attack loss {loss!r}: choose one of {sorted(LOSSES)} or pass a "
                   "callable loss(logits, labels) -> per-example loss")
  return LOSSES[loss]


def check_eps(eps, norm: str = "linf") -> None:
  """Raises a clear error for an L-inf eps outside [0, 1] (images live in [0, 1]) or a negative
  L2 eps."""
  if not isinstance(eps, (int, float)):
    return  # traced values are checked by the caller
  if norm == "linf" and not 0.0 <= eps <= 1.0:
    raise UatError(f"eps={eps} is outside [0, 1]; eps is on the [0, 1] image scale "
                   "(e.g. 0.1 or 8/255)")
  if not eps >= 0.0:
    raise UatError(f"eps={eps} must be >= 0")


def project_linf(x_adv: jax.Array, x: jax.Array, eps) -> jax.Array:
  """Projects onto the intersection of the L-inf eps-ball around x and the [0, 1] box."""
  return jnp.clip(x_adv, jnp.maximum(x - eps, 0.0), jnp.minimum(x + eps, 1.0))


def _l2_norm(v: jax.Array) -> jax.Array:
  """Per-example L2 norm, shaped to broadcast against v."""
  return jnp.sqrt(jnp.sum(v * v, axis=tuple(range(1, v.ndim)), keepdims=True))


def project_l2(x_adv: jax.Array, x: jax.Array, eps) -> jax.Array:
  """Scales x_adv - x into the L2 eps-ball, then clips to [0, 1]. Clipping moves every coordinate
  toward x (x is in [0, 1]), so the result stays inside the ball."""
  delta = x_adv - x
  delta = delta * jnp.minimum(1.0, eps / (_l2_norm(delta) + 1e-12))
  return jnp.clip(x + delta, 0.0, 1.0)


def resolve_unroll(unroll: Union[int, bool], steps: int) -> Union[int, bool]:
  """-1 (auto): fully unrolled on CPU, where it measured 2-3x faster than a rolled loop
  (../shared/PERF_LEADS.md); rolled (1) on accelerators, keeping compile time flat in steps."""
  if unroll is True or unroll is False:
    return unroll
  if unroll == -1:
    return max(1, steps) if jax.default_backend() == "cpu" else 1
  return max(1, int(unroll))


def _check_norm(norm: str) -> None:
  if norm not in NORMS:
    raise UatError(f"unknown norm {norm!r}: choose one of {NORMS}")


def _input_grad(logits_fn, loss_fn, y):
  return jax.grad(lambda xa: jnp.sum(loss_fn(logits_fn(xa), y)))


def fgsm(logits_fn: LogitsFn, x: jax.Array, y: jax.Array, *, eps: float,
         loss: Union[str, PerExampleLoss] = "ce") -> jax.Array:
  """Fast gradient sign method (Goodfellow et al. 2015): one L-inf step of size eps from x."""
  check_eps(eps)
  x = jnp.asarray(x, jnp.float32)
  g = _input_grad(logits_fn, resolve_loss(loss), y)(x)
  return project_linf(x + eps * jnp.sign(g), x, eps)


def pgd(logits_fn: LogitsFn, x: jax.Array, y: jax.Array, *, key: jax.Array, eps: float,
        step_size: float, steps: int, norm: str = "linf", loss: Union[str, PerExampleLoss] = "ce",
        restarts: int = 1, random_start: bool = True,
        unroll: Union[int, bool] = 1) -> jax.Array:
  """Projected gradient ascent (Madry et al. 2018) on a per-example loss, L-inf or L2.

  Each restart starts from a uniform random point of the eps-ball (projected into [0, 1]) when
  `random_start`, then takes `steps` steps of `step_size` (signed gradient for L-inf, normalized
  gradient for L2), projecting after each. With several restarts, each example keeps the restart
  that misclassified it, or else the one with the highest loss. The step loop is a
  `lax.fori_loop`; `unroll` (an int, or True for fully unrolled) trades compile time for speed.
  """
  _check_norm(norm)
  check_eps(eps, norm)
  if steps < 0 or restarts < 1:
    raise UatError(f"PGD needs steps >= 0 and restarts >= 1, got steps={steps}, "
                   f"restarts={restarts}")
  loss_fn = resolve_loss(loss)
  x = jnp.asarray(x, jnp.float32)
  grad_fn = _input_grad(logits_fn, loss_fn, y)
  project = project_linf if norm == "linf" else project_l2

  def random_point(k):
    if norm == "linf":
      return project(x + jax.random.uniform(k, x.shape, x.dtype, -eps, eps), x, eps)
    k_dir, k_rad = jax.random.split(k)
    direction = jax.random.normal(k_dir, x.shape, x.dtype)
    radius = eps * jax.random.uniform(k_rad, (x.shape[0],) + (1,) * (x.ndim - 1), x.dtype)
    return project(x + radius * direction / (_l2_norm(direction) + 1e-12), x, eps)

  def step(_, xa):
    g = grad_fn(xa)
    if norm == "linf":
      return project(xa + step_size * jnp.sign(g), x, eps)
    return project(xa + step_size * g / (_l2_norm(g) + 1e-12), x, eps)

  def one_run(k):
    x0 = random_point(k) if random_start else x
    return jax.lax.fori_loop(0, steps, step, x0, unroll=resolve_unroll(unroll, steps))

  if restarts == 1:
    return one_run(key)

  def score(xa):
    logits = logits_fn(xa)
    return jnp.argmax(logits, -1) != y, loss_fn(logits, y)

  def restart(i, carry):
    best, best_fooled, best_loss = carry
    cand = one_run(jax.random.fold_in(key, i))
    fooled, value = score(cand)
    better = (fooled & ~best_fooled) | ((fooled == best_fooled) & (value > best_loss))
    pick = better.reshape((-1,) + (1,) * (x.ndim - 1))
    return (jnp.where(pick, cand, best), best_fooled | fooled,
            jnp.where(better, value, best_loss))

  first = one_run(key)  # the same run as restarts=1, so more restarts never do worse
  return jax.lax.fori_loop(1, restarts, restart, (first, *score(first)))[0]
