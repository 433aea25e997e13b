"""What every attack shares: the per-example losses it maximizes, argument checks, projections
onto the threat model, random starts and per-example selection."""

from __future__ import annotations

from typing import Optional, Callable, Union

import jax
import jax.numpy as jnp
import numpy as np

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


def targeted_dlr_loss(logits: jax.Array, labels: jax.Array, targets: jax.Array) -> jax.Array:
  """Targeted DLR (Croce & Hein 2020), to maximize: -(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2),
  pi sorting the logits descending. Needs at least 4 classes."""
  top = jax.lax.top_k(logits, 4)[0]
  z_y = jnp.take_along_axis(logits, labels[:, None], -1)[:, 0]
  z_t = jnp.take_along_axis(logits, targets[:, None], -1)[:, 0]
  return -(z_y - z_t) / (top[..., 0] - 0.5 * (top[..., 2] + top[..., 3]) + 1e-12)


def temperature_scaled(loss: Union[str, PerExampleLoss], temperature: float) -> PerExampleLoss:
  """`loss` on logits / temperature: an adaptive attack for models whose softmax is saturated
  (temperature > 1 brings the CE gradient back) or flattened by entropy maximization or label
  smoothing (temperature < 1 sharpens it)."""
  if not temperature > 0:
    raise UatError(f"temperature={temperature} must be > 0")
  loss_fn = resolve_loss(loss)
  return lambda logits, labels: loss_fn(logits / temperature, labels)


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


def check_inputs(x, y=None):
  """Checks images and labels before an attack; returns them (lists become numpy arrays).

  Images must be floats [B, ...] in [0, 1] and labels B integers: a uint8 or 0-255 image would
  otherwise give a wrong robust accuracy without any error. Concrete values are range-checked;
  traced ones (under jit) by dtype and shape only."""
  x = x if hasattr(x, "dtype") else np.asarray(x)
  if not jnp.issubdtype(x.dtype, jnp.floating):
    raise UatError(f"images must be float in [0, 1], got dtype {x.dtype}: convert uint8 images "
                   "with x.astype(np.float32) / 255")
  if x.ndim < 2:
    raise UatError(f"images must be a batch [B, H, W, C], got shape {tuple(x.shape)}")
  if y is not None:
    y = y if hasattr(y, "dtype") else np.asarray(y)
    if tuple(y.shape) != tuple(x.shape[:1]) or not jnp.issubdtype(y.dtype, jnp.integer):
      raise UatError(f"labels must be {x.shape[0]} integers (one per image), got dtype {y.dtype}"
                     f" and shape {tuple(y.shape)}")
  if not isinstance(x, jax.core.Tracer) and x.size:
    host = np.asarray(x)  # concrete: checked on the host, also inside another function's trace
    lo, hi = float(host.min()), float(host.max())
    if lo < 0.0 or hi > 1.0:
      raise UatError(f"images must be in [0, 1], got values in [{lo:.4g}, {hi:.4g}]: divide "
                     "0-255 images by 255")
  return x, y


def project_linf(x_adv: jax.Array, x: jax.Array, eps) -> jax.Array:
  """Projects onto the intersection of the L-inf eps-ball around x and the [0, 1] box."""
  return jnp.clip(x_adv, jnp.maximum(x - eps, 0.0), jnp.minimum(x + eps, 1.0))


def l2_norm(v: jax.Array) -> jax.Array:
  """Per-example L2 norm, shaped to broadcast against v."""
  return jnp.sqrt(jnp.sum(v * v, axis=tuple(range(1, v.ndim)), keepdims=True))


def project_l2(x_adv: jax.Array, x: jax.Array, eps) -> jax.Array:
  """Scales x_adv - x into the L2 eps-ball, then clips to [0, 1]. Clipping moves every coordinate
  toward x (x is in [0, 1]), so the result stays inside the ball."""
  delta = x_adv - x
  delta = delta * jnp.minimum(1.0, eps / (l2_norm(delta) + 1e-12))
  return jnp.clip(x + delta, 0.0, 1.0)


def resolve_unroll(unroll: Union[int, bool]) -> Union[int, bool]:
  """-1 (auto): a rolled loop (1) on every backend, keeping compile time flat in the step count.
  (On XLA:CPU a rolled loop ran PGD 3x slower than unrolled until the models' convolutions got
  their input gradient in the layout XLA:CPU runs fast, models.conv_general_dilated; since then
  rolled and unrolled loops run at the same speed: bench/RESULTS.md.) An int n > 1 unrolls n steps
  per iteration, True unrolls them all."""
  if unroll is True or unroll is False:
    return unroll
  return 1 if unroll == -1 else max(1, int(unroll))


def _check_norm(norm: str) -> None:
  if norm not in NORMS:
    raise UatError(f"unknown norm {norm!r}: choose one of {NORMS}")


def checked(name, x, y, eps, norm, loss, steps, restarts, min_steps):
  """Validates an iterative attack's arguments; returns (per-example loss, float32 images,
  labels as an array)."""
  x, y = check_inputs(x, y)
  _check_norm(norm)
  check_eps(eps, norm)
  if steps < min_steps or restarts < 1:
    raise UatError(f"{name} needs steps >= {min_steps} and restarts >= 1, got steps={steps}, "
                   f"restarts={restarts}")
  return resolve_loss(loss), jnp.asarray(x, jnp.float32), y


def input_grad(logits_fn, loss_fn, y):
  return jax.grad(lambda xa: jnp.sum(loss_fn(logits_fn(xa), y)))


PROJECTIONS = {"linf": project_linf, "l2": project_l2}


def uniform_start(key: jax.Array, x: jax.Array, eps, norm: str = "linf") -> jax.Array:
  """A uniform random point of the eps-ball around x (L-inf: uniform per pixel; L2: random
  direction, uniform radius), projected into [0, 1]."""
  if norm == "linf":
    return project_linf(x + jax.random.uniform(key, x.shape, x.dtype, -eps, eps), x, eps)
  k_dir, k_rad = jax.random.split(key)
  direction = jax.random.normal(k_dir, x.shape, x.dtype)
  radius = eps * jax.random.uniform(k_rad, (x.shape[0],) + (1,) * (x.ndim - 1), x.dtype)
  return project_l2(x + radius * direction / (l2_norm(direction) + 1e-12), x, eps)


def ascent_direction(g: jax.Array, norm: str) -> jax.Array:
  """The steepest-ascent direction of unit norm: sign(g) for L-inf, g / |g|_2 for L2."""
  return jnp.sign(g) if norm == "linf" else g / (l2_norm(g) + 1e-12)


def where_example(mask: jax.Array, a: jax.Array, b: jax.Array) -> jax.Array:
  """Per-example select: a where mask[i], else b."""
  return jnp.where(mask.reshape((-1,) + (1,) * (a.ndim - 1)), a, b)


def default_key(key: Optional[jax.Array]) -> jax.Array:
  """The attack's PRNG key: `key`, or PRNGKey(0) when None (attacks are deterministic in it)."""
  return jax.random.PRNGKey(0) if key is None else key


def best_of_restarts(logits_fn, loss_fn, x, y, one_run, key, restarts: int) -> jax.Array:
  """Runs `one_run(key_i)` `restarts` times; each example keeps the run that misclassified it,
  or else the one with the highest loss. Run 0 uses `key` itself, so restarts=k is never worse
  than restarts=1 with the same key."""
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
    return (where_example(better, cand, best), best_fooled | fooled,
            jnp.where(better, value, best_loss))

  first = one_run(key)
  return jax.lax.fori_loop(1, restarts, restart, (first, *score(first)))[0]
