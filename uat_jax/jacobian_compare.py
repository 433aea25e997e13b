"""Input-Jacobian norms of several workdirs compared on the same points (--mode=jacobian).

    python -m uat_jax.main --mode=jacobian --workdir=W_at --workdir=W_at_entm

Per workdir W/jacobian/norms.npz and summary.json; in the first workdir's jacobian/ folder
comparison.md, comparison.csv (ratios to the baseline) and histogram.png. The norms themselves:
uat_jax.jacobian.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any, Optional, Sequence

import jax
import numpy as np
from absl import logging

from uat_jax import classifier, data, files, jacobian, lock, sharding, tables, validation
from uat_jax import config as config_lib
from uat_jax.errors import UatError

def _label(result: dict[str, Any]) -> str:
  return f"{os.path.basename(os.path.normpath(result['workdir']))} ({result['method']})"


def analyze_workdirs(config, workdirs: Sequence[str],
                     num_devices: Optional[int] = None) -> dict[str, Any]:
  """Norms for the newest checkpoint of each workdir on the same evaluation points
  (config.evals.jacobian; each workdir's model from its own config.json, the first one's from
  `config`). Writes, per workdir, W/jacobian/norms.npz and summary.json, and into the first
  workdir's jacobian/ folder the comparison (comparison.md, comparison.csv, ratios to the
  baseline) and histogram.png; with config.evals.output_dir, DIR/jacobian/<workdir name>/ and
  DIR/jacobian/ instead."""
  mesh = sharding.make_mesh(num_devices)
  validation.validate(config, mesh.devices.size)
  jc = config.evals.jacobian
  baseline = jc.baseline or workdirs[0]
  if os.path.abspath(baseline) not in [os.path.abspath(w) for w in workdirs]:
    raise UatError(f"jacobian.baseline={baseline!r} is not one of the --workdir values "
                   f"{list(workdirs)}")
  configs = [config] + [config_lib.load_workdir_config(w) for w in workdirs[1:]]
  for w, c in zip(workdirs, configs):
    if c.data.name != config.data.name:
      raise UatError(f"{w} was trained on {c.data.name}, {workdirs[0]} on {config.data.name}: "
                     "compare workdirs of one dataset")
  x, y = data.images(config.data, config.evals.split, jc.num_examples)
  adversarial = ({"eps": config.attack.eps, "steps": config.evals.pgd.steps,
                  "step_size": config.evals.pgd.step_size} if jc.adversarial else None)
  # Read every checkpoint first (a bad workdir stays as it is), then hold the lock of every
  # directory written to (one writer each).
  clfs = [classifier.load(w, validation.evaluated_step(config), config=c, mesh=mesh)
          for w, c in zip(workdirs, configs)]
  out = config.evals.output_dir
  with contextlib.ExitStack() as stack:
    for d in sorted({os.path.abspath(d) for d in ([out] if out else workdirs)}):
      stack.enter_context(lock.lock(d, "Jacobian analysis", fix=lock.OUTPUT_DIR_FIX))
    return _analyze_locked(config, workdirs, configs, clfs, baseline, x, y, adversarial, mesh)


def _analyze_locked(config, workdirs, configs, clfs, baseline, x, y, adversarial,
                    mesh) -> dict[str, Any]:
  jc, n, out = config.evals.jacobian, len(y), config.evals.output_dir
  results = []
  for w, c, clf in zip(workdirs, configs, clfs):
    step = clf.step
    logging.info("Jacobian analysis of %s (%s, step %d) on %d %s examples", w, c.method, step, n,
                 config.evals.split)
    norms = jacobian.analyze(clf.logits_fn, x, y, outputs=tuple(jc.outputs),
                             norms=tuple(jc.norms), chunk_size=jc.chunk_size,
                             power_iters=jc.power_iters, adversarial=adversarial,
                             key=jax.random.PRNGKey(jc.seed), mesh=mesh)
    out_dir = (os.path.join(out, "jacobian", os.path.basename(os.path.normpath(w))) if out
               else os.path.join(w, "jacobian"))
    info = {"workdir": os.path.abspath(w), "method": c.method, "checkpoint_step": step,
            "num_examples": n, "adversarial": adversarial}
    r = {**info, "summary": jacobian.save(out_dir, norms, info), "norms": norms}
    results.append(r)
  comparison = {"baseline": os.path.abspath(baseline), "workdirs": results}
  out_dir = os.path.join(out or workdirs[0], "jacobian")
  files.write_atomic(os.path.join(out_dir, "comparison.md"), format_comparison(comparison))
  files.write_atomic(os.path.join(out_dir, "comparison.csv"), comparison_csv(comparison))
  plot_histograms(comparison, os.path.join(out_dir, "histogram.png"))
  return comparison


def _rows(comparison):
  """(points, quantity) pairs in a stable order."""
  first = comparison["workdirs"][0]["summary"]
  return [(where, q) for where in first for q in first[where]]


def _ratio(comparison, r, where, q) -> float:
  """The norm ratio this / baseline of mean norms: below 1, the norm shrinks by that factor."""
  base = next(b for b in comparison["workdirs"] if b["workdir"] == comparison["baseline"])
  mean = base["summary"][where][q]["mean"]
  return r["summary"][where][q]["mean"] / mean if mean > 0 else float("inf")


def format_comparison(comparison: dict[str, Any]) -> str:
  """Markdown: mean (median) of every norm per workdir, and the norm ratio this / baseline."""
  runs = comparison["workdirs"]
  base = next(r for r in runs if r["workdir"] == comparison["baseline"])
  lines = [f"Input-Jacobian norms on {runs[0]['num_examples']} examples; 'ratio' = the norm "
           f"ratio this / baseline ({_label(base)}) of mean norms: 0.50 means the norm shrinks "
           "by half relative to the baseline.", ""]
  rows = [[where, q] + [f"{r['summary'][where][q]['mean']:.4g} "
                        f"({r['summary'][where][q]['median']:.4g}) ratio "
                        f"{_ratio(comparison, r, where, q):.2f}" for r in runs]
          for where, q in _rows(comparison)]
  lines.append(tables.markdown_table(["points", "quantity"] + [_label(r) for r in runs], rows))
  lines += ["", "Cells: mean (median) and the norm ratio this / baseline. Quantities: "
            "<output>/<norm> of d output / d x (fro = Frobenius, spectral = largest singular "
            "value, inf = max absolute row sum); loss_grad = |d CE / d x|_2."]
  return "\n".join(lines) + "\n"


def comparison_csv(comparison: dict[str, Any]) -> str:
  lines = ["workdir,method,checkpoint_step,points,quantity,mean,std,median,p5,p95,"
           "ratio_this_over_baseline"]
  for r in comparison["workdirs"]:
    for where, q in _rows(comparison):
      s = r["summary"][where][q]
      lines.append(",".join(str(v) for v in (
          r["workdir"], r["method"], r["checkpoint_step"], where, q, s["mean"], s["std"],
          s["median"], s["p5"], s["p95"], _ratio(comparison, r, where, q))))
  return "\n".join(lines) + "\n"


def plot_histograms(comparison: dict[str, Any], path: str) -> None:
  """Histograms (log-scale x) of the Frobenius norms on clean points, one panel per output."""
  plt = files.pyplot()
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
  files.save_figure(fig, path)
