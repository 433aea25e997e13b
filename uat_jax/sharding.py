"""The 1-D ('data',) device mesh: batch sharded over it, train state replicated."""

from __future__ import annotations

import functools
import os

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from uat_jax.errors import UatError
from uat_jax.files import is_chief  # noqa: F401 -- the process that writes, for callers

DATA_AXIS = "data"


def make_mesh(num_devices: int | None = None, backend: str | None = None) -> jax.sharding.Mesh:
  """A mesh over the first `num_devices` devices (all when None) of `backend` (the default
  backend when None).

  Auto axis types: with the Explicit default of these JAX versions, Flax CNNs fail on a reshape
  of the sharded batch inside jit.
  """
  devices = jax.devices(backend)
  n = len(devices) if not num_devices else num_devices
  if n > len(devices):
    raise UatError(f"asked for {n} devices but only {len(devices)} are visible")
  return jax.make_mesh((n,), (DATA_AXIS,), axis_types=(jax.sharding.AxisType.Auto,),
                       devices=devices[:n])


def replicated(mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharded(mesh) -> NamedSharding:
  return NamedSharding(mesh, P(DATA_AXIS))


def _local_rows(sharding, global_rows: int) -> slice:
  """The rows of a batch-sharded global array that live on this process's devices."""
  index = sharding.addressable_devices_indices_map((global_rows,))
  starts = [idx[0].start or 0 for idx in index.values()]
  stops = [global_rows if idx[0].stop is None else idx[0].stop for idx in index.values()]
  return slice(min(starts), max(stops))


def shard_batch(batch: dict[str, np.ndarray], mesh) -> dict[str, jax.Array]:
  """Places a global host batch on the mesh, split along the batch axis.

  Every process computes the same global batch (batches depend only on (seed, step)) and hands
  over only the rows its own devices hold (`jax.make_array_from_process_local_data`); on one host
  that is the whole batch.
  """
  sharding = batch_sharded(mesh)
  out = {}
  for k, v in batch.items():
    rows = _local_rows(sharding, v.shape[0])
    out[k] = jax.make_array_from_process_local_data(sharding, v[rows], v.shape)
  return out


def to_host(x: jax.Array) -> np.ndarray:
  """A (possibly sharded over several processes) array as one numpy array on every process."""
  if getattr(x, "is_fully_addressable", True) or x.is_fully_replicated:
    return np.asarray(x)
  from jax.experimental import multihost_utils
  return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def initialize_distributed(coordinator_address: str | None = None,
                           num_processes: int | None = None,
                           process_id: int | None = None) -> None:
  """jax.distributed.initialize for one process per host (TPU pod slices and SLURM are detected
  from their environment; elsewhere pass the coordinator, process count and id). On CPU the
  collectives between processes go over gloo."""
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  try:
    jax.distributed.initialize(coordinator_address=coordinator_address,
                               num_processes=num_processes, process_id=process_id)
  except (RuntimeError, ValueError) as e:
    raise UatError(f"jax.distributed.initialize failed ({' '.join(str(e).split())[:200]}): pass "
                   "--coordinator_address, --num_processes and --process_id, or run under SLURM "
                   "or on a TPU VM") from e


class PmapStep:
  """A step function `fn(state, batch, axis_name=...)` compiled with jax.pmap over the mesh's
  devices (config.parallelism = "pmap").

  Between steps the state carries a leading device axis: `prepare(state)` replicates a state
  (as created or restored), `step(state, batch)` takes a global batch and splits it over the
  devices, `export(state)` gives the plain state back (for evaluation and checkpoints)."""

  def __init__(self, fn, mesh):
    self.devices = list(mesh.devices.flat)
    self.n = len(self.devices)
    self._stacked = batch_sharded(mesh)  # a leading device axis, one slice per device
    self._step = jax.pmap(functools.partial(fn, axis_name=DATA_AXIS),
                          axis_name=DATA_AXIS, devices=self.devices,
                          donate_argnums=(0,))

  def prepare(self, state):
    """One copy of `state` per device, stacked on a leading axis sharded over the devices."""
    return jax.tree.map(
        lambda a: jax.device_put(np.broadcast_to(a, (self.n,) + np.shape(a)), self._stacked),
        jax.device_get(state))

  def export(self, state):
    return jax.tree.map(lambda a: a[0], state)

  def __call__(self, state, batch):
    batch = {k: np.asarray(v).reshape((self.n, -1) + v.shape[1:]) for k, v in batch.items()}
    state, metrics = self._step(state, batch)
    return state, jax.tree.map(lambda a: a[0], metrics)


def compilation_cache(directory: str, min_compile_time_s: float = 0.1) -> None:
  """JAX's persistent compilation cache in `directory`, unless the user chose one
  (JAX_COMPILATION_CACHE_DIR): a program compiled once (same model, attack and shapes) is
  loaded by every later evaluation, training or study piece instead of compiled again."""
  if not jax.config.jax_compilation_cache_dir:
    jax.config.update("jax_compilation_cache_dir", os.path.abspath(directory))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", min_compile_time_s)
