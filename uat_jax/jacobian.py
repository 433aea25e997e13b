"""Input-Jacobian analysis: J(x) = d f(x) / d x per example, for f = logits, softmax
probabilities or log-probabilities of any `logits_fn(x) -> logits` (batch norm in inference mode
is the caller's logits_fn; `uat_jax.load(workdir).logits_fn` gives one for a checkpoint).

    J = input_jacobian(logits_fn, x, "probs")                  # [B, K, H*W*C]
    norms = jacobian_norms(logits_fn, x, y, output="logits")   # {"fro", "spectral", "inf", ...}

Norms: Frobenius ("fro"), spectral (largest singular value, by power iteration on J^T J with one
jvp and one vjp per iteration, never forming J) and the induced infinity norm ("inf", the largest
absolute row sum). `loss_grad` is the L2 norm of the input gradient of the cross entropy (what ART
calls loss sensitivity). Work goes in fixed-size chunks of examples (the last one padded; sharded
over the devices of a mesh when one is given), so memory is bounded by the chunk and nothing
recompiles per chunk. Comparing the checkpoints of several workdirs: uat_jax.jacobian_compare.
The paper (claim 3) reports a ~10x smaller input-Jacobian norm for AT+EntM than for AT without
saying which output and norm; we give all of them.
"""

from __future__ import annotations

import functools
import io
import os
from typing import Any, Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from uat_jax import attacks, files, losses, models, provenance, sharding
from uat_jax.batching import Batches
from uat_jax.errors import UatError

OUTPUTS = ("logits", "probs", "log_probs")
NORMS = ("fro", "spectral", "inf")
PERCENTILES = (5, 25, 50, 75, 95)


def check(output: str, norms: Sequence[str] = ()) -> None:
  """A UatError for an unknown output or norm name."""
  if output not in OUTPUTS:
    raise UatError(f"unknown Jacobian output {output!r}: choose one of {OUTPUTS}")
  bad = [n for n in norms if n not in NORMS]
  if bad:
    raise UatError(f"unknown Jacobian norm(s) {bad}: choose from {NORMS}")


def output_fn(logits_fn: Callable, output: str) -> Callable:
  """x -> logits, softmax(logits) or log_softmax(logits)."""
  check(output)
  if output == "logits":
    return logits_fn
  if output == "probs":
    return lambda x: jax.nn.softmax(logits_fn(x), axis=-1)
  return lambda x: jax.nn.log_softmax(logits_fn(x), axis=-1)


def _single(logits_fn: Callable, output: str, shape: tuple) -> Callable:
  """f for one example: flat image [D] -> outputs [K] (the model sees a batch of one)."""
  f = output_fn(logits_fn, output)
  return lambda flat: f(flat.reshape((1,) + shape))[0]


def input_jacobian(logits_fn: Callable, x: jax.Array, output: str = "logits") -> jax.Array:
  """Per-example input Jacobians [B, K, H*W*C] via jax.vmap(jax.jacrev(.)), in float32 (float64
  inputs stay float64 when jax_enable_x64 is on, for numerical checks)."""
  check(output)
  x = jnp.asarray(x)
  x = x if x.dtype == jnp.float64 else x.astype(jnp.float32)
  return models.jit_with_model(logits_fn, functools.partial(_jacobian, output=output),
                               ("input_jacobian", output))(x)


def _jacobian(logits_fn, x, *, output):
  """input_jacobian's program (jitted by the caller)."""
  g = _single(logits_fn, output, x.shape[1:])
  return jax.vmap(jax.jacrev(g))(x.reshape(x.shape[0], -1))


def spectral_norm(g: Callable, flat: jax.Array, key: jax.Array, iters: int) -> jax.Array:
  """Largest singular value of the Jacobian of g: R^D -> R^K at `flat`, by power iteration on
  J^T J (one jvp and one vjp per iteration; J is never formed)."""
  _, vjp = jax.vjp(g, flat)
  jvp = lambda v: jax.jvp(g, (flat,), (v,))[1]
  v = jax.random.normal(key, flat.shape, flat.dtype)
  v = v / (jnp.linalg.norm(v) + 1e-30)

  def step(_, v):
    w = vjp(jvp(v))[0]
    return w / (jnp.linalg.norm(w) + 1e-30)

  v = jax.lax.fori_loop(0, iters, step, v)
  return jnp.linalg.norm(jvp(v))


def _chunk_norms(logits_fn, x, y, key, start, *, output, norms, power_iters):
  """Norms for one chunk [C, ...] whose first example has index `start` (jitted by the caller;
  each example's power-iteration start depends on its index only, not on the chunking)."""
  shape = x.shape[1:]
  g = _single(logits_fn, output, shape)
  flat = x.reshape(x.shape[0], -1)
  out = {}
  if "fro" in norms or "inf" in norms:
    jac = jax.vmap(jax.jacrev(g))(flat)
    if "fro" in norms:
      out["fro"] = jnp.sqrt(jnp.sum(jac * jac, axis=(1, 2)))
    if "inf" in norms:
      out["inf"] = jnp.max(jnp.sum(jnp.abs(jac), axis=2), axis=1)
  if "spectral" in norms:
    keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(start + jnp.arange(x.shape[0]))
    out["spectral"] = jax.vmap(lambda f, k: spectral_norm(g, f, k, power_iters))(flat, keys)
  grad = jax.grad(lambda v: jnp.sum(losses.cross_entropy(logits_fn(v), y)))(x)
  out["loss_grad"] = jnp.sqrt(jnp.sum(grad.reshape(x.shape[0], -1) ** 2, axis=1))
  return out


class _Programs:
  """The jitted norms and predict programs for a logits_fn; kept for the process under their
  (output, norms, power_iters) when logits_fn is a Partial (models.jit_with_model), so repeated
  tracking during training and a study's next checkpoint compile nothing again."""

  def __init__(self, logits_fn, output, norms, power_iters):
    self.norms = models.jit_with_model(logits_fn, functools.partial(
        _chunk_norms, output=output, norms=norms, power_iters=power_iters),
        ("jacobian_norms", output, norms, power_iters))
    self.predict = models.jit_with_model(logits_fn, lambda f, v: jnp.argmax(f(v), -1),
                                         ("argmax",))


def jacobian_norms(logits_fn: Callable, x, y=None, *, output: str = "logits",
                   norms: Sequence[str] = NORMS, chunk_size: int = 64, power_iters: int = 50,
                   key: Optional[jax.Array] = None, mesh=None) -> dict[str, np.ndarray]:
  """Per-example norms of the input Jacobian of `output`, {norm: [B]}, plus "loss_grad" (L2 norm
  of d CE / d x with labels `y`, or the predicted labels when y is None). Computed in chunks of
  `chunk_size` examples (the last padded; with `mesh`, rounded up to a multiple of its devices
  and sharded over them), each a fixed-shape jitted program. x: float images in [0, 1]."""
  check(output, norms)
  if chunk_size < 1 or power_iters < 1:
    raise UatError(f"chunk_size and power_iters must be >= 1, got {chunk_size}, {power_iters}")
  x, y = attacks.check_inputs(x, y)
  x = np.asarray(x, np.float32)
  n = x.shape[0]
  if n == 0:
    raise UatError("jacobian_norms needs at least one example")
  key = jax.random.PRNGKey(0) if key is None else key
  fn = _Programs(logits_fn, output, tuple(norms), power_iters)
  labels = np.zeros(n, np.int32) if y is None else np.asarray(y, np.int32)
  batches = Batches({"x": x, "y": labels}, chunk_size, mesh)
  out: dict[str, np.ndarray] = {}
  for _, sel, b in batches():
    yb = fn.predict(b["x"]) if y is None else b["y"]
    for k, v in fn.norms(b["x"], yb, key, np.int32(sel[0])).items():
      out.setdefault(k, np.zeros(n, np.float32))[sel] = sharding.to_host(v)[: len(sel)]
  return out


def frobenius_estimate(logits_fn: Callable, x, *, output: str = "logits",
                       num_projections: int = 16, key: Optional[jax.Array] = None) -> jax.Array:
  """Hutchinson-style estimate of the per-example Frobenius norm from m = num_projections
  vector-Jacobian products: ||J||_F^2 = E ||J^T u||^2 for Rademacher u in R^K. Cheaper than the
  exact norm (K VJPs) when m < K; the relative error of ||J||_F^2 has standard deviation at most
  sqrt(2 / m)."""
  check(output)
  x = jnp.asarray(x, jnp.float32)
  key = jax.random.PRNGKey(0) if key is None else key
  return models.jit_with_model(logits_fn, functools.partial(
      _frobenius_estimate, output=output, num_projections=num_projections),
      ("frobenius_estimate", output, num_projections))(x, key)


def _frobenius_estimate(logits_fn, x, key, *, output, num_projections):
  """frobenius_estimate's program (jitted by the caller)."""
  g = _single(logits_fn, output, x.shape[1:])
  flat = x.reshape(x.shape[0], -1)
  num_classes = jax.eval_shape(g, flat[0]).shape[0]

  def one(f, k):
    _, vjp = jax.vjp(g, f)
    u = jax.random.rademacher(k, (num_projections, num_classes), jnp.float32)
    w = jax.vmap(lambda ui: vjp(ui)[0])(u)
    return jnp.sqrt(jnp.mean(jnp.sum(w * w, axis=1)))

  return jax.vmap(one)(flat, jax.random.split(key, x.shape[0]))


# --------------------------------------------------------------------------------------------
# Dataset-level statistics.
# --------------------------------------------------------------------------------------------

def summarize(values: np.ndarray, bins: int = 30) -> dict[str, Any]:
  """mean, std, median, min, max, percentiles and a histogram over log10-spaced bins."""
  v = np.asarray(values, np.float64)
  stats = {"count": int(v.size), "mean": float(v.mean()), "std": float(v.std()),
           "median": float(np.median(v)), "min": float(v.min()), "max": float(v.max())}
  stats.update({f"p{p}": float(np.percentile(v, p)) for p in PERCENTILES})
  positive = v[v > 0]
  if positive.size:
    lo, hi = np.log10(positive.min()), np.log10(positive.max())
    edges = np.logspace(lo, hi if hi > lo else lo + 1e-6, bins + 1)
    counts, _ = np.histogram(positive, edges)
    stats["histogram"] = {"edges": edges.tolist(), "counts": counts.tolist()}
  return stats


def analyze(logits_fn: Callable, x, y, *, outputs: Sequence[str] = ("logits", "probs"),
            norms: Sequence[str] = NORMS, chunk_size: int = 64, power_iters: int = 50,
            adversarial: Optional[dict[str, Any]] = None, key: Optional[jax.Array] = None,
            mesh=None) -> dict[str, dict[str, np.ndarray]]:
  """Per-example norms on clean points and, when `adversarial` = {"eps", "steps", "step_size"}
  is given, on L-inf PGD points (CE, random start) of the same examples:
  {"clean": {"<output>/<norm>": [B], "loss_grad": [B]}, "adversarial": {...}}."""
  key = jax.random.PRNGKey(0) if key is None else key
  x, y = attacks.check_inputs(x, y)
  x, y = np.asarray(x, np.float32), np.asarray(y, np.int32)
  points = {"clean": x}
  if adversarial:
    a = adversarial
    attack = models.jit_with_model(logits_fn, lambda f, v, t, k: attacks.pgd(
        f, v, t, key=k, eps=a["eps"], step_size=a["step_size"], steps=a["steps"]))
    adv = np.empty_like(x)
    for i, sel, b in Batches({"x": x, "y": y}, chunk_size, mesh)():
      xa = attack(b["x"], b["y"], jax.random.fold_in(key, 10_000 + i))
      adv[sel] = sharding.to_host(xa)[: len(sel)]
    points["adversarial"] = adv
  result: dict[str, dict[str, np.ndarray]] = {}
  for where, pts in points.items():
    result[where] = {}
    for output in outputs:
      logging.info("Jacobian norms: %s points, %s, %d examples", where, output, len(y))
      r = jacobian_norms(logits_fn, pts, y, output=output, norms=norms, chunk_size=chunk_size,
                         power_iters=power_iters, key=key, mesh=mesh)
      result[where]["loss_grad"] = r.pop("loss_grad")
      result[where].update({f"{output}/{k}": v for k, v in r.items()})
  return result


def save(out_dir: str, norms: dict[str, dict[str, np.ndarray]],
         info: dict[str, Any]) -> dict[str, Any]:
  """The one on-disk layout of Jacobian results: out_dir/norms.npz with one array per
  "<points>/<quantity>" (e.g. "clean/probs/fro") and out_dir/summary.json with `info` and
  "summary": {points: {quantity: summarize(...)}}. `norms` is analyze()'s output. Returns the
  summary."""
  if files.is_chief():  # the process that writes (files.write_atomic)
    os.makedirs(out_dir, exist_ok=True)
  buf = io.BytesIO()
  np.savez(buf, **{f"{where}/{q}": v for where, d in norms.items() for q, v in d.items()})
  files.write_atomic(os.path.join(out_dir, "norms.npz"), buf.getvalue())
  summary = {where: {q: summarize(v) for q, v in d.items()} for where, d in norms.items()}
  files.write_json(os.path.join(out_dir, "summary.json"), {
      **info, "summary": summary, "provenance": provenance.record()})
  return summary


def load_norms(out_dir: str) -> dict[str, dict[str, np.ndarray]]:
  """{points: {quantity: per-example norms}} as `save` wrote them."""
  out: dict[str, dict[str, np.ndarray]] = {}
  with np.load(os.path.join(out_dir, "norms.npz")) as z:
    for key in z.files:
      where, quantity = key.split("/", 1)
      out.setdefault(where, {})[quantity] = z[key]
  return out
