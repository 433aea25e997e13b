"""The one batching helper of every evaluation (training-time PGD, the attack suite, Jacobians):
fixed-size batches of chosen examples, the last one zero-padded so that a jitted program sees one
shape, and placed on the device mesh (batch axis sharded) when there is one.
"""

from __future__ import annotations

from typing import Iterator, Optional

import numpy as np

from uat_jax import data, sharding


class Batches:
  """Padded, optionally mesh-sharded batches over arrays that share their leading axis.

      batches = Batches({"x": x, "y": y}, batch_size=500, mesh=mesh)
      for i, sel, batch in batches():            # or batches(indices) for a subset
        out[sel] = to_host(f(batch["x"], batch["y"]))[: len(sel)]

  `batch_size` is capped at the number of examples and rounded up to a multiple of the mesh's
  devices. Each batch also carries "mask": 1.0 on real rows, 0.0 on the padding."""

  def __init__(self, arrays: dict[str, np.ndarray], batch_size: int, mesh=None):
    sizes = {len(a) for a in arrays.values()}
    if len(sizes) != 1:
      raise ValueError(f"arrays of different lengths: { {k: len(a) for k, a in arrays.items()} }")
    self.arrays, self.mesh = arrays, mesh
    self.num_examples = sizes.pop()
    n_dev = 1 if mesh is None else mesh.devices.size
    size = max(1, min(batch_size, self.num_examples))
    self.batch_size = -(-size // n_dev) * n_dev

  def __len__(self) -> int:
    return self.num_examples

  def num_batches(self, num_selected: Optional[int] = None) -> int:
    n = self.num_examples if num_selected is None else num_selected
    return -(-n // self.batch_size)

  def __call__(self, idx: Optional[np.ndarray] = None) -> Iterator[tuple[int, np.ndarray, dict]]:
    """(batch number, the example indices it holds, the padded batch) for `idx` (all examples
    when None), in order."""
    idx = np.arange(self.num_examples) if idx is None else np.asarray(idx)
    for i, start in enumerate(range(0, len(idx), self.batch_size)):
      sel = idx[start:start + self.batch_size]
      batch = {k: data.pad_to(np.asarray(a[sel]), self.batch_size) for k, a in self.arrays.items()}
      batch["mask"] = data.pad_to(np.ones(len(sel), np.float32), self.batch_size)
      if self.mesh is not None:
        batch = sharding.shard_batch(batch, self.mesh)
      yield i, sel, batch
