"""The 1-D ('data',) device mesh: batch sharded over it, train state replicated."""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from uat_jax.errors import UatError

DATA_AXIS = "data"


def make_mesh(num_devices: int | None = None) -> jax.sharding.Mesh:
  """A mesh over the first `num_devices` devices (all when None).

  Auto axis types: with the Explicit default of these JAX versions, Flax CNNs fail on a reshape
  of the sharded batch inside jit.
  """
  devices = jax.devices()
  n = len(devices) if not num_devices else num_devices
  if n > len(devices):
    raise UatError(f"asked for {n} devices but only {len(devices)} are visible")
  return jax.make_mesh((n,), (DATA_AXIS,), axis_types=(jax.sharding.AxisType.Auto,),
                       devices=devices[:n])


def replicated(mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharded(mesh) -> NamedSharding:
  return NamedSharding(mesh, P(DATA_AXIS))


def check_divisible(batch_size: int, mesh, what: str = "batch_size") -> None:
  n = mesh.devices.size
  if batch_size % n:
    raise UatError(f"{what}={batch_size} is not divisible by the {n} devices of the mesh: "
                   f"choose a multiple of {n} (--config.{what})")


def shard_batch(batch: dict[str, np.ndarray], mesh) -> dict[str, jax.Array]:
  """Places a host batch on the mesh, split along the batch axis.

  Each process passes its own slice (the whole batch on one host); the global array is the
  concatenation over processes.
  """
  sharding = batch_sharded(mesh)
  return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in batch.items()}
