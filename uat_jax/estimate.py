"""Cost estimates of a training run before it runs: FLOPs per step from XLA's cost analysis of
the lowered train step, and hours on accelerators (`--dry_run` of uat_jax.main and uat_jax.study).
"""

from __future__ import annotations

from typing import Any

import ml_collections
import numpy as np

from uat_jax import data, optimizers, sharding, train


def step_flops(config) -> float:
  """FLOPs of one training step of `config` at its global batch: XLA's cost analysis of the
  lowered step with the attack loop unrolled (a rolled loop's body is counted once)."""
  c = ml_collections.ConfigDict(config.to_dict())
  c.attack.unroll = True
  mesh = sharding.make_mesh(1)
  spec = data.get_spec(c.data.name)
  model = train.build_model(c, spec)
  schedule = optimizers.learning_rate_schedule(c.optimizer, 1000)
  tx = optimizers.optimizer(c.optimizer, schedule)
  state = train.create_train_state(c, model, spec, tx, mesh)
  step = train.make_train_step(c, model, spec, schedule, mesh)
  batch = {"image": np.zeros((c.batch_size, *spec.shape), np.uint8),
           "label": np.zeros((c.batch_size,), np.int32)}
  cost = step.lower(state, sharding.shard_batch(batch, mesh)).cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return float(cost.get("flops", float("nan")))


# Peak dense FLOP/s of one accelerator for float32 training (TF32 tensor cores on GPUs, as XLA
# uses them for float32 convolutions and matmuls by default) or bfloat16 (TPUs), and the fraction
# of it a convolutional AT step is assumed to reach. Estimates, not measurements.
ACCELERATORS = {"H100": 495e12, "A100": 156e12, "TPU v4 chip": 275e12, "TPU v5e chip": 197e12}
UTILIZATION = 0.3
ESTIMATE_BASIS = (f"hours at {UTILIZATION:.0%} of each accelerator's peak dense FLOP/s ("
                  + ", ".join(f"{a} {p / 1e12:.0f} TFLOP/s" for a, p in ACCELERATORS.items())
                  + "); an assumption, not a measurement")


def estimate(config, flops: float | None = None) -> dict[str, Any]:
  """{"steps", "flops" (per step), "hours": {accelerator: hours}} of training `config` (the
  evaluations during training not included); `flops` defaults to step_flops(config)."""
  flops = step_flops(config) if flops is None else flops
  steps = train.total_steps(config, train.num_train_examples(config))
  return {"steps": steps, "flops": flops,
          "hours": {a: steps * flops / (p * UTILIZATION) / 3600 for a, p in ACCELERATORS.items()}}
