"""Input-Jacobian analysis: J(x) = d f(x) / d x per example, for f = logits, softmax
probabilities or log-probabilities of any `logits_fn(x) -> logits` (batch norm in inference mode
is the caller's logits_fn; evaluate.load_classifier gives one for a checkpoint).

    J = input_jacobian(logits_fn, x, "probs")                  # [B, K, H*W*C]
    norms = jacobian_norms(logits_fn, x, y, output="logits")   # {"fro", "spectral", "inf", ...}

Norms: Frobenius ("fro"), spectral (largest singular value, by power iteration on J^T J with one
jvp and one vjp per iteration, never forming J) and the induced infinity norm ("inf", the largest
absolute row sum). `loss_grad` is the L2 norm of the input gradient of the cross entropy (what ART
calls loss sensitivity). Work goes in fixed-size chunks of examples (the last one padded), so memory
is bounded by the chunk and nothing recompiles per chunk. The paper (claim 3) reports a ~10x
smaller input-Jacobian norm for AT+EntM than for AT without saying which output and norm; we give
all of them.
"""

from __future__ import annotations

import functools
import io
import json
import os
from typing import Any, Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from uat_jax import attacks, data, losses, models
from uat_jax.errors import UatError

OUTPUTS = ("logits", "probs", "log_probs")
NORMS = ("fro", "spectral", "inf")
PERCENTILES = (5, 25, 50, 75, 95)


def _check(output: str, norms: Sequence[str] = ()) -> None:
  if output not in OUTPUTS:
    raise UatError(f"unknown Jacobian output {output!r}: choose one of {OUTPUTS}")
  bad = [n for n in norms if n not in NORMS]
  if bad:
    raise UatError(f"unknown Jacobian norm(s) {bad}: choose from {NORMS}")


def output_fn(logits_fn: Callable, output: str) -> Callable:
  """x -> logits, softmax(logits) or log_softmax(logits)."""
  _check(output)
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
  x = jnp.asarray(x)
  x = x if x.dtype == jnp.float64 else x.astype(jnp.float32)
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


def _chunks(n: int, chunk_size: int):
  for start in range(0, n, chunk_size):
    yield start, min(start + chunk_size, n)


@functools.lru_cache(maxsize=32)
def _cached_programs(output: str, norms: tuple, power_iters: int):
  body = functools.partial(_chunk_norms, output=output, norms=norms, power_iters=power_iters)
  return jax.jit(body), jax.jit(lambda f, v: jnp.argmax(f(v), -1))


class _Programs:
  """The jitted norms and predict programs for a logits_fn; compiled once per (model, output,
  norms) when logits_fn is a Partial (e.g. repeated tracking during training)."""

  def __init__(self, logits_fn, output, norms, power_iters):
    if isinstance(logits_fn, jax.tree_util.Partial):
      norms_fn, predict = _cached_programs(output, norms, power_iters)
      self.norms = lambda *a: norms_fn(logits_fn, *a)
      self.predict = lambda v: predict(logits_fn, v)
    else:
      self.norms = models.jit_with_model(logits_fn, functools.partial(
          _chunk_norms, output=output, norms=norms, power_iters=power_iters))
      self.predict = models.jit_with_model(logits_fn, lambda f, v: jnp.argmax(f(v), -1))


def jacobian_norms(logits_fn: Callable, x, y=None, *, output: str = "logits",
                   norms: Sequence[str] = NORMS, chunk_size: int = 64, power_iters: int = 50,
                   key: Optional[jax.Array] = None) -> dict[str, np.ndarray]:
  """Per-example norms of the input Jacobian of `output`, {norm: [B]}, plus "loss_grad" (L2 norm
  of d CE / d x with labels `y`, or the predicted labels when y is None). Computed in chunks of
  `chunk_size` examples (the last padded), each a fixed-shape jitted program."""
  _check(output, norms)
  if chunk_size < 1 or power_iters < 1:
    raise UatError(f"chunk_size and power_iters must be >= 1, got {chunk_size}, {power_iters}")
  x = np.asarray(x, np.float32)
  n = x.shape[0]
  if n == 0:
    raise UatError("jacobian_norms needs at least one example")
  key = jax.random.PRNGKey(0) if key is None else key
  chunk_size = min(chunk_size, n)
  fn = _Programs(logits_fn, output, tuple(norms), power_iters)
  out: dict[str, list] = {}
  for a, b in _chunks(n, chunk_size):
    xb = data.pad_to(x[a:b], chunk_size)
    yb = np.asarray(fn.predict(xb)) if y is None else data.pad_to(np.asarray(y[a:b], np.int32),
                                                                chunk_size)
    for k, v in fn.norms(xb, yb, key, jnp.int32(a)).items():
      out.setdefault(k, []).append(np.asarray(v)[: b - a])
  return {k: np.concatenate(v) for k, v in out.items()}


def frobenius_estimate(logits_fn: Callable, x, *, output: str = "logits",
                       num_projections: int = 16, key: Optional[jax.Array] = None) -> jax.Array:
  """Hutchinson-style estimate of the per-example Frobenius norm from m = num_projections
  vector-Jacobian products: ||J||_F^2 = E ||J^T u||^2 for Rademacher u in R^K. Cheaper than the
  exact norm (K VJPs) when m < K; the relative error of ||J||_F^2 has standard deviation at most
  sqrt(2 / m)."""
  _check(output)
  x = jnp.asarray(x, jnp.float32)
  key = jax.random.PRNGKey(0) if key is None else key
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
            adversarial: Optional[dict[str, Any]] = None,
            key: Optional[jax.Array] = None) -> dict[str, dict[str, np.ndarray]]:
  """Per-example norms on clean points and, when `adversarial` = {"eps", "steps", "step_size"}
  is given, on L-inf PGD points (CE, random start) of the same examples:
  {"clean": {"<output>/<norm>": [B], "loss_grad": [B]}, "adversarial": {...}}."""
  key = jax.random.PRNGKey(0) if key is None else key
  x, y = np.asarray(x, np.float32), np.asarray(y, np.int32)
  points = {"clean": x}
  if adversarial:
    a = adversarial
    attack = models.jit_with_model(logits_fn, lambda f, v, t, k: attacks.pgd(
        f, v, t, key=k, eps=a["eps"], step_size=a["step_size"], steps=a["steps"]))
    size = min(chunk_size, len(y))
    adv = []
    for i, (s, e) in enumerate(_chunks(len(y), size)):
      xa = attack(data.pad_to(x[s:e], size), data.pad_to(y[s:e], size),
                  jax.random.fold_in(key, 10_000 + i))
      adv.append(np.asarray(xa)[: e - s])
    points["adversarial"] = np.concatenate(adv)
  result: dict[str, dict[str, np.ndarray]] = {}
  for where, pts in points.items():
    result[where] = {}
    for output in outputs:
      logging.info("Jacobian norms: %s points, %s, %d examples", where, output, len(y))
      r = jacobian_norms(logits_fn, pts, y, output=output, norms=norms, chunk_size=chunk_size,
                         power_iters=power_iters, key=key)
      result[where]["loss_grad"] = r.pop("loss_grad")
      result[where].update({f"{output}/{k}": v for k, v in r.items()})
  return result


# --------------------------------------------------------------------------------------------
# Workdirs (the CLI's --mode=jacobian) and reports.
# --------------------------------------------------------------------------------------------

def _label(result: dict[str, Any]) -> str:
  return f"{os.path.basename(os.path.normpath(result['workdir']))} ({result['method']})"


def analyze_workdirs(config, workdirs: Sequence[str],
                     num_devices: Optional[int] = None) -> dict[str, Any]:
  """Norms for the newest checkpoint of each workdir on the same test points (config.jacobian;
  each workdir's model from its own config.json, the first one's from `config`). Writes, per
  workdir, W/jacobian/norms.npz and summary.json, and into the first workdir's jacobian/ folder
  the comparison (comparison.md, comparison.csv, ratios to the baseline) and histogram.png."""
  from uat_jax import config_lib, evaluate, sharding  # evaluate imports train, which imports us
  mesh = sharding.make_mesh(num_devices)
  config_lib.validate(config, mesh.devices.size)
  jc = config.jacobian
  baseline = jc.baseline or workdirs[0]
  if os.path.abspath(baseline) not in [os.path.abspath(w) for w in workdirs]:
    raise UatError(f"jacobian.baseline={baseline!r} is not one of the --workdir values "
                   f"{list(workdirs)}")
  configs = [config] + [config_lib.load_workdir_config(w) for w in workdirs[1:]]
  for w, c in zip(workdirs, configs):
    if c.data.name != config.data.name:
      raise UatError(f"{w} was trained on {c.data.name}, {workdirs[0]} on {config.data.name}: "
                     "compare workdirs of one dataset")
  split = data.eval_split(config.data)
  n = min(jc.num_examples, len(split)) if jc.num_examples else len(split)
  x, y = split.images[:n].astype(np.float32) / 255.0, split.labels[:n]
  adversarial = ({"eps": config.attack.eps, "steps": config.eval.pgd_steps,
                  "step_size": config.eval.pgd_step_size} if jc.adversarial else None)
  results = []
  for w, c in zip(workdirs, configs):
    logits_fn, step = evaluate.load_classifier(w, c, mesh)
    logging.info("Jacobian analysis of %s (%s, step %d) on %d test examples", w, c.method, step, n)
    norms = analyze(logits_fn, x, y, outputs=tuple(jc.outputs), norms=tuple(jc.norms),
                    chunk_size=jc.chunk_size, power_iters=jc.power_iters,
                    adversarial=adversarial, key=jax.random.PRNGKey(jc.seed))
    out_dir = os.path.join(w, "jacobian")
    if sharding.is_chief():
      os.makedirs(out_dir, exist_ok=True)
    buf = io.BytesIO()
    np.savez(buf, **{f"{where}/{k}": v for where, d in norms.items() for k, v in d.items()})
    evaluate.write_atomic(os.path.join(out_dir, "norms.npz"), buf.getvalue())
    summary = {where: {k: summarize(v) for k, v in d.items()} for where, d in norms.items()}
    r = {"workdir": os.path.abspath(w), "method": c.method, "checkpoint_step": step,
         "num_examples": n, "adversarial": adversarial, "summary": summary}
    evaluate.write_atomic(os.path.join(out_dir, "summary.json"), json.dumps(r, indent=2))
    r["norms"] = norms
    results.append(r)
  comparison = {"baseline": os.path.abspath(baseline), "workdirs": results}
  out_dir = os.path.join(workdirs[0], "jacobian")
  evaluate.write_atomic(os.path.join(out_dir, "comparison.md"), format_comparison(comparison))
  evaluate.write_atomic(os.path.join(out_dir, "comparison.csv"), comparison_csv(comparison))
  plot_histograms(comparison, os.path.join(out_dir, "histogram.png"))
  return comparison


def _rows(comparison):
  """(points, quantity) pairs in a stable order."""
  first = comparison["workdirs"][0]["summary"]
  return [(where, q) for where in first for q in first[where]]


def _ratio(comparison, r, where, q) -> float:
  base = next(b for b in comparison["workdirs"] if b["workdir"] == comparison["baseline"])
  mean = r["summary"][where][q]["mean"]
  return base["summary"][where][q]["mean"] / mean if mean > 0 else float("inf")


def format_comparison(comparison: dict[str, Any]) -> str:
  """Markdown: mean (median) of every norm per workdir, and baseline mean / this mean."""
  runs = comparison["workdirs"]
  base = next(r for r in runs if r["workdir"] == comparison["baseline"])
  lines = [f"Input-Jacobian norms on {runs[0]['num_examples']} test examples; "
           f"'x' = mean of the baseline {_label(base)} / mean of the workdir.", "",
           "| points | quantity | " + " | ".join(_label(r) for r in runs) + " |",
           "|---|---" + "|---" * len(runs) + "|"]
  for where, q in _rows(comparison):
    cells = []
    for r in runs:
      s = r["summary"][where][q]
      cells.append(f"{s['mean']:.4g} ({s['median']:.4g}) x{_ratio(comparison, r, where, q):.2f}")
    lines.append(f"| {where} | {q} | " + " | ".join(cells) + " |")
  lines += ["", "Cells: mean (median) and the ratio to the baseline. Quantities: <output>/<norm> "
            "of d output / d x (fro = Frobenius, spectral = largest singular value, inf = max "
            "absolute row sum); loss_grad = |d CE / d x|_2."]
  return "\n".join(lines) + "\n"


def comparison_csv(comparison: dict[str, Any]) -> str:
  lines = ["workdir,method,checkpoint_step,points,quantity,mean,std,median,p5,p95,"
           "baseline_over_this"]
  for r in comparison["workdirs"]:
    for where, q in _rows(comparison):
      s = r["summary"][where][q]
      lines.append(",".join(str(v) for v in (
          r["workdir"], r["method"], r["checkpoint_step"], where, q, s["mean"], s["std"],
          s["median"], s["p5"], s["p95"], _ratio(comparison, r, where, q))))
  return "\n".join(lines) + "\n"


def plot_histograms(comparison: dict[str, Any], path: str) -> None:
  """Histograms (log-scale x) of the Frobenius norms on clean points, one panel per output."""
  from uat_jax import evaluate
  plt = evaluate.pyplot()
  runs = comparison["workdirs"]
  quantities = [q for q in runs[0]["norms"]["clean"] if q.endswith("/fro")] or ["loss_grad"]
  fig, axes = plt.subplots(1, len(quantities), figsize=(5 * len(quantities), 3.6), dpi=120,
                           squeeze=False)
  for ax, q in zip(axes[0], quantities):
    values = [r["norms"]["clean"][q] for r in runs]
    positive = np.concatenate([v[v > 0] for v in values])
    edges = np.logspace(np.log10(positive.min()), np.log10(positive.max()) + 1e-6, 40)
    for r, v in zip(runs, values):
      ax.hist(v[v > 0], bins=edges, alpha=0.5, label=_label(r))
    ax.set_xscale("log")
    ax.set_xlabel(f"{q} (clean test points)")
    ax.set_ylabel("examples")
    ax.legend(fontsize=7)
  evaluate.save_figure(fig, path)
