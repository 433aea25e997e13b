"""The study's cost before it runs (`--dry_run`): every training run with its FLOPs per step
from XLA's cost analysis, its hours on one device from the measured throughput table
(uat_jax.throughput: measured, another batch, or scaled by FLOPs, as each row says), and the
grid's wall-clock when its independent runs share `devices` devices, `devices_per_run` each."""

from __future__ import annotations

from absl import logging

from uat_jax import estimate, losses, tables, throughput
from uat_jax.study import spec


def dry_run(study, root: str, devices: int = 1, devices_per_run: int = 1,
            device: str | None = None) -> str:
  """A table of every training run of the study (final runs of swept methods at the first swept
  value: the value does not change the cost): model, method, steps, FLOPs per step, images/s on
  `device` (default: the first measured device, the user's own after `uat-jax bench`) and how
  that rate was obtained, hours; then the grid's wall-clock on `devices` devices. A run on
  several devices is assumed to scale linearly (an assumption, said so). Trains nothing;
  evaluations are counted, not estimated."""
  cache: dict[tuple, float] = {}
  chosen = {m: {"key": k, "chosen": v[0]} for m, (k, v) in study.sweep.items()}
  runs = {r.name: r for r in spec.sweep_runs(study) + spec.final_runs(study, chosen)
          + spec.ablation_runs(study, chosen)}
  rows_of_tables = throughput.tables()
  device = device or next(iter(throughput.devices(rows_of_tables)), None)
  rows, hours, missing = [], [], []
  for r in runs.values():
    c = r.config
    adversarial, kind = losses.method_parts(c.method)
    key = (c.model.name, c.data.name, adversarial, c.attack.steps, c.batch_size, c.dtype,
           adversarial and kind != "none" and c.regularizer.on)  # "clean"/"both": one more pass
    if key not in cache:
      logging.info("cost analysis of %s / %s (%s)", c.model.name, c.method, c.data.name)
      cache[key] = estimate.step_flops(c)
    e = estimate.estimate(c, flops=cache[key], device=device, rows_of_tables=rows_of_tables)
    h = None if e["hours"] is None else e["hours"] / devices_per_run
    if h is None:
      missing.append(r.name)
    else:
      hours.append(h)
    rows.append([r.name, c.model.name, c.method, c.dtype, f"{e['steps']:,}",
                 f"{cache[key] / 1e9:,.1f}",
                 "-" if e["images_per_s"] is None else f"{e['images_per_s']:,.0f}", e["basis"],
                 "-" if h is None else f"{h:.3g}"])
  slots = max(1, devices // devices_per_run)
  rows.append(["total", "", "", "", "", "", "", "", f"{sum(hours):.3g}"])
  per_run = ("one device per run" if devices_per_run == 1 else
             f"{devices_per_run} devices per run, assumed to scale linearly")
  lines = [f"Dry run of {len(runs)} training runs under {root} on {device or 'no measured device'}"
           f" ({per_run}); rates from the measured throughput table (`uat-jax bench` measures "
           "yours)", "",
           tables.markdown_table(["run", "model", "method", "dtype", "steps", "GFLOP/step",
                                  "images/s", "rate", "hours"], rows), ""]
  if hours:
    lines.append(f"Wall-clock of the grid on {devices} device{'s' * (devices > 1)} "
                 f"({slots} run{'s' * (slots > 1)} at a time, longest first): about "
                 f"{throughput.schedule(hours, slots):.3g} h of training ({sum(hours):.3g} "
                 "device-hours in all).")
  if missing:
    lines.append(f"Not estimated ({len(missing)} runs: no measurement of their dtype on "
                 f"{device}): run `uat-jax bench` on the device, or pick one with --device "
                 f"({', '.join(throughput.devices(rows_of_tables))}).")
  evaluations = sum(o in r.config.evals
                    for group, outputs in ((spec.final_runs(study, chosen), study.evals),
                                           (spec.ablation_runs(study, chosen),
                                            study.ablation_evals))
                    for r in group for o in outputs)
  lines.append(f"Evaluations (about {evaluations} outputs, not estimated) and the validation "
               "evaluations during training come on top.")
  return "\n".join(lines)
