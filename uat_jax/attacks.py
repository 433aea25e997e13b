"""Adversarial attacks on any JAX classifier given as `logits_fn(x) -> logits`.

Images are float32 NHWC in [0, 1] and eps is on that scale. Attacks are pure, jittable and
deterministic in their key; their output always lies in the eps-ball around x (L-inf unless a
`norm="l2"` is chosen) and in [0, 1]. White-box: fgsm, pgd (shared with adversarial training),
apgd, apgd_targeted, fab_targeted (FAB-T, minimal distortion). Black-box: square (score-based),
spsa (gradient-free estimate), transfer (PGD on a surrogate). Losses: ce, cw (margin), dlr,
targeted DLR, temperature_scaled(loss, T), or any `loss(logits, labels) -> [B]` to maximize.
"""

from __future__ import annotations

from typing import Callable, Union

import jax
import jax.numpy as jnp
import numpy as np
import optax

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


def _l2_norm(v: jax.Array) -> jax.Array:
  """Per-example L2 norm, shaped to broadcast against v."""
  return jnp.sqrt(jnp.sum(v * v, axis=tuple(range(1, v.ndim)), keepdims=True))


def project_l2(x_adv: jax.Array, x: jax.Array, eps) -> jax.Array:
  """Scales x_adv - x into the L2 eps-ball, then clips to [0, 1]. Clipping moves every coordinate
  toward x (x is in [0, 1]), so the result stays inside the ball."""
  delta = x_adv - x
  delta = delta * jnp.minimum(1.0, eps / (_l2_norm(delta) + 1e-12))
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


def _checked(name, x, y, eps, norm, loss, steps, restarts, min_steps):
  """Validates an iterative attack's arguments; returns (per-example loss, float32 images)."""
  check_inputs(x, y)
  _check_norm(norm)
  check_eps(eps, norm)
  if steps < min_steps or restarts < 1:
    raise UatError(f"{name} needs steps >= {min_steps} and restarts >= 1, got steps={steps}, "
                   f"restarts={restarts}")
  return resolve_loss(loss), jnp.asarray(x, jnp.float32)


def _input_grad(logits_fn, loss_fn, y):
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
  return project_l2(x + radius * direction / (_l2_norm(direction) + 1e-12), x, eps)


def ascent_direction(g: jax.Array, norm: str) -> jax.Array:
  """The steepest-ascent direction of unit norm: sign(g) for L-inf, g / |g|_2 for L2."""
  return jnp.sign(g) if norm == "linf" else g / (_l2_norm(g) + 1e-12)


def fgsm(logits_fn: LogitsFn, x: jax.Array, y: jax.Array, *, eps: float,
         loss: Union[str, PerExampleLoss] = "ce") -> jax.Array:
  """Fast gradient sign method (Goodfellow et al. 2015): one L-inf step of size eps from x."""
  check_eps(eps)
  check_inputs(x, y)
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
  loss_fn, x = _checked("PGD", x, y, eps, norm, loss, steps, restarts, min_steps=0)
  grad_fn = _input_grad(logits_fn, loss_fn, y)
  project = PROJECTIONS[norm]

  def step(_, xa):
    return project(xa + step_size * ascent_direction(grad_fn(xa), norm), x, eps)

  def one_run(k):
    x0 = uniform_start(k, x, eps, norm) if random_start else x
    return jax.lax.fori_loop(0, steps, step, x0, unroll=resolve_unroll(unroll))

  return _best_of_restarts(logits_fn, loss_fn, x, y, one_run, key, restarts)


def _best_of_restarts(logits_fn, loss_fn, x, y, one_run, key, restarts: int) -> jax.Array:
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
    return (_where_example(better, cand, best), best_fooled | fooled,
            jnp.where(better, value, best_loss))

  first = one_run(key)
  return jax.lax.fori_loop(1, restarts, restart, (first, *score(first)))[0]


def _where_example(mask: jax.Array, a: jax.Array, b: jax.Array) -> jax.Array:
  """Per-example select: a where mask[i], else b."""
  return jnp.where(mask.reshape((-1,) + (1,) * (a.ndim - 1)), a, b)


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


def apgd(logits_fn: LogitsFn, x: jax.Array, y: jax.Array, *, key: jax.Array, eps: float,
         steps: int = 100, norm: str = "linf", loss: Union[str, PerExampleLoss] = "ce",
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
  loss_fn, x = _checked("APGD", x, y, eps, norm, loss, steps, restarts, min_steps=1)
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
         "f": f, "x_adv": _where_example(first_fool, x_new, s["x_adv"]),
         "fooled": s["fooled"] | fooled, "x_best": _where_example(improved, x_new, s["x_best"]),
         "g_best": _where_example(improved, g, s["g_best"]),
         "f_best": jnp.where(improved, f, s["f_best"])}
    halve = (s["count"] <= rho * window[i]) | (~s["halved"] & (s["f_best_ckpt"] >= s["f_best"]))
    halve = halve & is_ckpt[i]
    return {**s, "eta": jnp.where(halve, s["eta"] / 2, s["eta"]),
            "x": _where_example(halve, s["x_best"], s["x"]),
            "g": _where_example(halve, s["g_best"], s["g"]),
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
    return _where_example(s["fooled"], s["x_adv"], s["x_best"])

  return _best_of_restarts(logits_fn, loss_fn, x, y, one_run, key, restarts)


def apgd_targeted(logits_fn: LogitsFn, x: jax.Array, y: jax.Array, *, key: jax.Array,
                  eps: float, steps: int = 100, norm: str = "linf", num_targets: int = 9,
                  unroll: Union[int, bool] = 1) -> jax.Array:
  """APGD-T (Croce & Hein 2020): APGD on the targeted DLR loss, once per target class, the
  targets being the `num_targets` classes with the highest clean logits after the top one. Each
  example keeps the first run that misclassified it, or else its result for the last target."""
  check_inputs(x, y)
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
    return _where_example(take, cand, best), fooled | cand_fooled

  return jax.lax.fori_loop(0, num_targets, per_target, (x, jnp.zeros(x.shape[0], bool)))[0]


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
    return {"x": _where_example(hit, back, new), "best": _where_example(better, new, s["best"]),
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


def fab_targeted(logits_fn: LogitsFn, x: jax.Array, y: jax.Array, *, key: jax.Array,
                 eps: float, steps: int = 100, num_targets: int = 9,
                 restarts: int = 1) -> jax.Array:
  """FAB-T, L-inf (Croce & Hein 2020, as in AutoAttack's standard sequence): fab_minimal toward
  each of the `num_targets` classes with the highest clean logits after the top one. Each
  example keeps the first target whose minimal adversarial point lies within eps; the result is
  projected onto the eps-ball (and [0, 1]), so it is adversarial exactly where FAB found a point
  at distance <= eps."""
  check_eps(eps)
  check_inputs(x, y)
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
    return _where_example(~done, cand, best), done | hit

  return jax.lax.fori_loop(0, num_targets, per_target, (x, jnp.zeros(x.shape[0], bool)))[0]


def _square_fraction(p_init: float, i: jax.Array, iterations: int) -> jax.Array:
  """Square attack's schedule of the window area fraction: p_init halved at fixed points of a
  10,000-iteration run, rescaled to `iterations` (Andriushchenko et al. 2020)."""
  at = (i * 10000) // max(iterations, 1)
  halvings = sum((at > t).astype(jnp.int32)
                 for t in (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000))
  return p_init / (2.0 ** halvings)


def _margin_fn(logits_fn, y):
  return lambda xa: -margin_loss(logits_fn(xa), y)  # > 0 while correctly classified


def square_start(logits_fn: LogitsFn, x: jax.Array, y: jax.Array, *, key: jax.Array,
                 eps) -> tuple[jax.Array, jax.Array]:
  """Square's starting point (vertical stripes of +-eps) and its margin z_y - max_{j != y} z_j
  per example (> 0 while correctly classified): one forward pass."""
  b, _, w, c = x.shape
  stripes = eps * jax.random.rademacher(key, (b, 1, w, c), jnp.float32)
  x_best = project_linf(x + stripes, x, eps)
  return x_best, _margin_fn(logits_fn, y)(x_best)


def square_steps(logits_fn: LogitsFn, x: jax.Array, y: jax.Array, x_best: jax.Array,
                 m_best: jax.Array, *, key: jax.Array, eps, start, stop, iterations: int,
                 p_init: float = 0.8) -> tuple[jax.Array, jax.Array]:
  """Iterations start..stop-1 (traced bounds: one program for every segment) of a Square run
  of `iterations` iterations, from (x_best, m_best); returns them updated. The window schedule
  depends on the iteration's index in the whole run, so a run cut into segments (and, between
  segments, restricted to the still-robust examples: see uat_jax.evaluate) follows the same
  schedule as one uninterrupted run."""
  b, h, w, c = x.shape
  margin = _margin_fn(logits_fn, y)
  rows = jnp.arange(h)[None, :, None, None]
  cols = jnp.arange(w)[None, None, :, None]

  def step(i, carry):
    x_best, m_best = carry
    k_h, k_w, k_v = jax.random.split(jax.random.fold_in(key, i), 3)
    p = _square_fraction(p_init, i, iterations)
    side = jnp.clip(jnp.round(jnp.sqrt(p * h * w)), 1, max(min(h, w) - 1, 1)).astype(jnp.int32)
    top = jax.random.randint(k_h, (b, 1, 1, 1), 0, h - side + 1)
    left = jax.random.randint(k_w, (b, 1, 1, 1), 0, w - side + 1)
    window = (rows >= top) & (rows < top + side) & (cols >= left) & (cols < left + side)
    values = eps * jax.random.rademacher(k_v, (b, 1, 1, c), jnp.float32)
    delta = x_best - x

    def propose(v):
      return project_linf(x + jnp.where(window, v, delta), x, eps)

    cand = propose(values)
    unchanged = jnp.all(cand == x_best, axis=(1, 2, 3))
    cand = _where_example(unchanged, propose(-values), cand)  # never waste a query
    m = margin(cand)
    accept = (m < m_best) & (m_best > 0)
    return _where_example(accept, cand, x_best), jnp.where(accept, m, m_best)

  return jax.lax.fori_loop(start, stop, step, (x_best, m_best))


def square(logits_fn: LogitsFn, x: jax.Array, y: jax.Array, *, key: jax.Array, eps: float,
           queries: int = 5000, p_init: float = 0.8) -> jax.Array:
  """Square attack, L-inf (Andriushchenko et al. 2020): score-based random search, no gradients.

  Starts from vertical stripes of +-eps, then per query proposes, inside one random square window
  per example (side shrinking on a schedule), a fresh +-eps value per channel, and keeps it if it
  lowers the margin z_y - max_{j != y} z_j. Examples stop once misclassified. Uses `queries`
  forward passes per example (1 for the start). (The suite runs it in segments on the
  still-robust examples only: square_start and square_steps.)
  """
  check_eps(eps)
  check_inputs(x, y)
  if queries < 1:
    raise UatError(f"Square needs queries >= 1, got {queries}")
  x = jnp.asarray(x, jnp.float32)
  k0, key = jax.random.split(key)
  x_best, m_best = square_start(logits_fn, x, y, key=k0, eps=eps)
  return square_steps(logits_fn, x, y, x_best, m_best, key=key, eps=eps, start=0,
                      stop=queries - 1, iterations=queries - 1, p_init=p_init)[0]


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
  check_inputs(x, y)
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
    return xa, opt_state, _where_example(now & ~done, xa, x_adv), done | now

  carry = (x0, opt.init(x0), x0, fooled(x0))
  xa, _, x_adv, done = jax.lax.fori_loop(0, steps, step, carry)
  return _where_example(done, x_adv, xa)


def transfer(surrogate_logits_fn: LogitsFn, x: jax.Array, y: jax.Array, *, key: jax.Array,
             eps: float, steps: int = 20, step_size: Union[float, None] = None,
             loss: Union[str, PerExampleLoss] = "ce", restarts: int = 1,
             unroll: Union[int, bool] = 1) -> jax.Array:
  """Transfer (black-box) attack: L-inf PGD on a surrogate model (e.g. another workdir's
  checkpoint, see evaluate.load_classifier); feed the result to the target model."""
  return pgd(surrogate_logits_fn, x, y, key=key, eps=eps,
             step_size=eps / 4 if step_size is None else step_size, steps=steps, loss=loss,
             restarts=restarts, unroll=unroll)
