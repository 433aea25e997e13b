"""Cost estimates of a training run before it runs (`--dry_run` of uat_jax.main and
uat_jax.study): FLOPs per step from XLA's cost analysis of the lowered train step, and hours on a
device from the measured throughput table (uat_jax.throughput; `uat-jax bench` adds the user's
own device).
"""

from __future__ import annotations

from typing import Any, Optional

import ml_collections
import numpy as np

from uat_jax import data, losses, optimizers, sharding, throughput, train


def step_flops(config) -> float:
  """FLOPs of one training step of `config` at its global batch: XLA's cost analysis of the
  step with the attack loop unrolled (a rolled loop's body is counted once), lowered for the CPU
  whatever the default backend: a GPU program's analysis omits the convolutions that run in
  cuDNN (measured: 0.16 instead of 23.3 GFLOP per image for the PreAct ResNet-18 AT step)."""
  c = ml_collections.ConfigDict(config.to_dict())
  c.attack.unroll = True
  mesh = sharding.make_mesh(1, backend="cpu")
  spec = data.get_spec(c.data.name)
  model = train.build_model(c, spec)
  schedule = optimizers.learning_rate_schedule(c.optimizer, 1000)
  tx = optimizers.optimizer(c.optimizer, schedule)
  state = train.create_train_state(c, model, spec, tx, mesh)
  step = train.make_train_step(c, model, spec, schedule, mesh)
  batch = {"image": np.zeros((c.batch_size, *spec.shape), np.uint8),
           "label": np.zeros((c.batch_size,), np.int32)}
  lowered = step.lower(state, sharding.shard_batch(batch, mesh))
  cost = lowered.cost_analysis()  # None in some versions: then the compiled program's
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  if not cost:
    cost = lowered.compile().cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return float((cost or {}).get("flops", float("nan")))


def estimate(config, flops: Optional[float] = None, device: Optional[str] = None,
             rows_of_tables=None) -> dict[str, Any]:
  """The cost of training `config` (the evaluations during training not included): {"steps",
  "flops" (per step), "device", "images_per_s", "basis" (how the rate was obtained: measured,
  another batch, or scaled by FLOPs; uat_jax.throughput), "hours" (on one device; None when
  the device has no measurement of this dtype)}. `flops` defaults to step_flops(config)."""
  flops = step_flops(config) if flops is None else flops
  steps = train.total_steps(config, train.num_train_examples(config))
  tables = throughput.tables() if rows_of_tables is None else rows_of_tables
  device = device or next(iter(throughput.devices(tables)), None)
  spec = data.get_spec(config.data.name)
  adversarial = losses.method_parts(config.method)[0]
  rate = throughput.lookup(model=config.model.name, image=spec.shape, dtype=config.dtype,
                           batch=config.batch_size,
                           attack_steps=int(config.attack.steps) if adversarial else 0,
                           gflop_per_image=flops / config.batch_size / 1e9, device=device,
                           rows_of_tables=tables)
  hours = None if rate is None else steps * config.batch_size / rate.images_per_s / 3600
  return {"steps": steps, "flops": flops, "device": device,
          "images_per_s": None if rate is None else rate.images_per_s,
          "basis": "no measurement of this dtype on that device" if rate is None else rate.basis,
          "hours": hours}


def summary(config, e: dict[str, Any]) -> str:
  """One line of `estimate`'s result, as `--dry_run` prints it."""
  head = (f"{config.model.name} / {config.method} on {config.data.name} ({config.dtype}, batch "
          f"{config.batch_size}): {e['steps']:,} steps of {e['flops'] / 1e9:,.1f} GFLOP")
  if e["hours"] is None:
    return f"{head}; {e['device']}: {e['basis']} (measure it with `uat-jax bench`)"
  return (f"{head}; on one {e['device']}: {e['images_per_s']:,.0f} images/s ({e['basis']}), "
          f"{e['hours']:.3g} h")
