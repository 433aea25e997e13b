"""The study's cost before it runs (`--dry_run`): every training run with its FLOPs per step
from XLA's cost analysis, its hours on one device from the measured throughput table
(uat_jax.throughput: measured, another batch, or scaled by FLOPs, as each row says), the grid's
wall-clock when its independent runs share `devices` devices, `devices_per_run` each, and an
upper bound on its evaluations' device-hours (every attack on every point, at the rate of the
model's measured AT step)."""

from __future__ import annotations

from absl import logging

from uat_jax import data, estimate, evaluate, losses, tables, throughput
from uat_jax.study import spec


def dry_run(study, root: str, devices: int = 1, devices_per_run: int = 1,
            device: str | None = None) -> str:
  """A table of every training run of the study (final runs of swept methods at the first swept
  value: the value does not change the cost): model, method, steps, FLOPs per step, images/s on
  `device` (default: the first measured device, the user's own after `uat-jax bench`) and how
  that rate was obtained, hours; then the grid's wall-clock on `devices` devices. A run on
  several devices is assumed to scale linearly (an assumption, said so); then the evaluations'
  upper bound (evaluation_line). Trains nothing."""
  cache: dict[tuple, float] = {}
  chosen = {m: {"key": k, "chosen": v[0]} for m, (k, v) in study.sweep.items()}
  runs = {r.name: r for r in spec.sweep_runs(study) + spec.final_runs(study, chosen)
          + spec.ablation_runs(study, chosen)}
  rows_of_tables = throughput.tables()
  device = device or next(iter(throughput.devices(rows_of_tables)), None)
  rows, hours, missing = [], [], []
  at_rates: dict[tuple, float] = {}  # (model, dtype) -> images/s of its AT step
  for r in runs.values():
    c = r.config
    adversarial, kind = losses.method_parts(c.method)
    key = (c.model.name, c.data.name, adversarial, c.attack.steps, c.batch_size, c.dtype,
           adversarial and kind != "none" and c.regularizer.on)  # "clean"/"both": one more pass
    if key not in cache:
      logging.info("cost analysis of %s / %s (%s)", c.model.name, c.method, c.data.name)
      cache[key] = estimate.step_flops(c)
    e = estimate.estimate(c, flops=cache[key], device=device, rows_of_tables=rows_of_tables)
    if adversarial and e["images_per_s"] is not None and (
        c.method == "at" or (c.model.name, c.dtype) not in at_rates):  # AT's own, if it runs
      at_rates[c.model.name, c.dtype] = e["images_per_s"]
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
  lines.append(evaluation_line(study, chosen, at_rates))
  return "\n".join(lines)


def evaluation_line(study, chosen, at_rates: dict[tuple, float]) -> str:
  """The evaluations' count and an upper bound on their device-hours: per output its images
  (the whole evaluation split when num_examples is 0) x eps x attack passes, at the gradient-pass
  rate of the model's AT step (its images/s x (attack steps + 1))."""
  outputs, passes, hours, unrated = 0, 0.0, 0.0, set()
  for group, specs in ((spec.final_runs(study, chosen), study.evals),
                       (spec.ablation_runs(study, chosen), study.ablation_evals)):
    for r in group:
      c = r.config
      for o in [o for o in specs if o in c.evals]:
        s = c.evals[o]
        n = s.num_examples or data.get_spec(c.data.name).num_test
        p = n * len(s.eps) * sum(evaluate.passes(e) for e in evaluate.suite_entries(s))
        outputs, passes = outputs + 1, passes + p
        rate = at_rates.get((c.model.name, c.dtype))
        if rate is None:
          unrated.add(c.model.name)
        else:
          hours += p / (rate * (c.attack.steps + 1)) / 3600
  line = (f"Evaluations: {outputs} outputs, at most {passes / 1e9:,.3g} billion gradient "
          f"passes, at most {hours:,.3g} device-hours at the AT step's measured rate (every "
          "attack on every point: `strong` and `adaptive` attack only the points still robust, "
          "so they cost less); the validation evaluations during training come on top.")
  if unrated:
    line += f" Not rated (no AT run of {', '.join(sorted(unrated))} in the grid)."
  return line
