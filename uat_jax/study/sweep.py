"""The sweep's choice: beta (EntM) / alpha (LS) per regularized method at the method's first seed,
scored by the best logged value of the run's best-checkpoint metric on the validation split
(ties: the smaller value), written to ROOT/sweep.json; or the choice of a finished sweep taken
from `study.sweep_from`."""

from __future__ import annotations

import os
from typing import Any

from absl import logging

from uat_jax import files
from uat_jax.errors import UatError
from uat_jax.study import spec


def pinned_choice(study) -> dict[str, Any]:
  """The choice of a finished sweep of this study, read from `study.sweep_from` (a sweep.json
  that `choose` wrote, e.g. committed under results/<dataset>/data/) and checked against the
  study's sweep: the same methods, parameters and values, the chosen value among them. Each
  method's entry gets "source": that path."""
  path = study.sweep_from
  fix = ("point sweep_from at the sweep.json of a finished sweep of this study, or set "
         "--study.sweep_from='' to run the sweep")
  if not os.path.exists(path):
    raise UatError(f"sweep_from={path!r} does not exist: {fix}")
  saved = files.read_json(path)
  out = {}
  for method in [m for m in study.methods if m in study.sweep]:
    key, values = study.sweep[method]
    entry = saved.get(method)
    if entry is None:
      raise UatError(f"sweep_from={path!r} has no choice for {method}: {fix}")
    expected = {spec.tag(v) for v in values} if spec.swept(study, method) else set()
    if (entry.get("key") != key or set(entry.get("values", {})) != expected
        or not any(spec.tag(v) == spec.tag(entry.get("chosen")) for v in values)):
      raise UatError(f"sweep_from={path!r} chose {entry.get('key')}={entry.get('chosen')} for "
                     f"{method} over {sorted(entry.get('values', {}))}, but the study sweeps "
                     f"{key} over {sorted(expected)}: {fix}")
    out[method] = {**entry, "source": path}
  return out


def best_logged(workdir: str, metric: str) -> float:
  """The best (highest) value of `metric` in a run's metrics.jsonl."""
  curve = files.read_curves(os.path.join(workdir, "metrics.jsonl"), (metric,)).get(metric)
  if not curve:
    raise UatError(f"{workdir} logged no {metric}: rerun the study, which resumes it")
  return max(v for _, v in curve)


def choose(study, root: str) -> dict[str, Any]:
  """The sweep's choices from its finished runs, written to ROOT/sweep.json: {method: {"key",
  "metric", "values": {value: best logged metric}, "chosen"}}; a method with one value is
  "not swept". With `study.sweep_from` the choice is that file's (`pinned_choice`) and no
  sweep run is needed."""
  if study.get("sweep_from"):
    out = pinned_choice(study)
    files.write_json(os.path.join(root, "sweep.json"), out)
    return out
  out = {}
  for method in study.methods:
    if method not in study.sweep:
      continue
    key, values = study.sweep[method]
    if not spec.swept(study, method):
      out[method] = {"key": key, "values": {}, "chosen": values[0], "metric": "not swept"}
      continue
    runs = [spec.make_run(study, method, study.seeds[method][0], v) for v in values]
    metric = runs[0].config.best_checkpoint.metric
    scores = {spec.tag(v): best_logged(spec.run_dir(root, r), metric) for v, r in zip(values, runs)}
    best = max(scores.values())
    chosen = min(v for v in values if scores[spec.tag(v)] == best)  # ties: the smaller value
    out[method] = {"key": key, "metric": metric, "values": scores, "chosen": chosen}
    logging.info("sweep %s: %s; chose %s=%s", method,
                 ", ".join(f"{v}: {score:.4f}" for v, score in scores.items()), key, chosen)
  files.write_json(os.path.join(root, "sweep.json"), out)
  return out
