"""The study's cost before it runs (`--dry_run`): every training run with its FLOPs per step
from XLA's cost analysis and its estimated hours on accelerators (uat_jax.estimate)."""

from __future__ import annotations

from absl import logging

from uat_jax import estimate, losses, tables
from uat_jax.study import spec


def dry_run(study, root: str) -> str:
  """A table of every training run of the study (final runs of swept methods at the first swept
  value: the value does not change the cost): model, method, steps, FLOPs per step (XLA's cost
  analysis) and the estimated hours on each accelerator (train.estimate). Trains nothing;
  evaluations are counted, not estimated."""
  cache: dict[tuple, float] = {}
  chosen = {m: {"key": k, "chosen": v[0]} for m, (k, v) in study.sweep.items()}
  runs = {r.name: r for r in spec.sweep_runs(study) + spec.final_runs(study, chosen)
          + spec.ablation_runs(study, chosen)}
  header = ["run", "model", "method", "steps", "GFLOP/step"] + [
      f"{a} h" for a in estimate.ACCELERATORS]
  rows = []
  totals = dict.fromkeys(estimate.ACCELERATORS, 0.0)
  for r in runs.values():
    c = r.config
    key = (c.model.name, c.data.name, losses.method_parts(c.method)[0], c.attack.steps,
           c.batch_size, c.dtype)
    if key not in cache:
      logging.info("cost analysis of %s / %s (%s)", c.model.name, c.method, c.data.name)
      cache[key] = estimate.step_flops(c)
    e = estimate.estimate(c, flops=cache[key])
    steps, hours = e["steps"], e["hours"]
    for a in totals:
      totals[a] += hours[a]
    rows.append([r.name, c.model.name, c.method, f"{steps:,}", f"{cache[key] / 1e9:,.1f}"]
                + [f"{h:.3g}" for h in hours.values()])
  rows.append(["total", "", "", "", ""] + [f"{h:.3g}" for h in totals.values()])
  lines = [f"Dry run of {len(runs)} training runs under {root}: {estimate.ESTIMATE_BASIS}", "",
           tables.markdown_table(header, rows)]
  evaluations = sum(o in r.config.evals
                    for group, outputs in ((spec.final_runs(study, chosen), study.evals),
                                           (spec.ablation_runs(study, chosen),
                                            study.ablation_evals))
                    for r in group for o in outputs)
  lines += ["", f"Evaluations (about {evaluations} outputs, not estimated) and the validation "
            "evaluations during training come on top."]
  for key, flops in cache.items():
    if key[0] == "preact_resnet18" and key[2]:
      rate = key[4] * estimate.ACCELERATORS["H100"] * estimate.UTILIZATION / flops
      lines.append(f"PreAct ResNet-18 PGD-{key[3]} AT step: {flops / 1e9:,.0f} GFLOP per batch of "
                   f"{key[4]}, so about {rate:,.0f} images/s on an H100 at "
                   f"{estimate.UTILIZATION:.0%}; "
                   "published GPU figures: about 270 images/s in float32 (Rice et al.'s logs) "
                   "and about 705 images/s (the FastAT benchmark).")
  return "\n".join(lines)
