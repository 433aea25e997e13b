"""The one encoding of per-example outcomes on disk: "<n>:<hex>", 4 examples per hexadecimal
character, in results.json (clean, per attack, worst case) and the report's data."""

from __future__ import annotations

import functools

import numpy as np


def pack(mask) -> str:
  """A boolean mask (array or sequence) -> "<n>:<hex>"."""
  bits = np.asarray(mask, bool).astype(np.uint8)
  n = len(bits)
  padded = np.concatenate([bits, np.zeros(-n % 4, np.uint8)]).reshape(-1, 4)
  nibbles = padded @ np.array([8, 4, 2, 1], np.uint8)
  return f"{n}:" + "".join(f"{v:x}" for v in nibbles)


@functools.lru_cache(maxsize=None)
def unpack(packed: str) -> np.ndarray:
  """"<n>:<hex>" -> n outcomes in {0, 1} as uint8 (read-only, and decoded once: reports ask
  for the same masks many times)."""
  n, hexes = packed.split(":")
  nibbles = np.array([int(h, 16) for h in hexes], np.uint8)
  out = ((nibbles[:, None] >> np.array([3, 2, 1, 0], np.uint8)) & 1).reshape(-1)[: int(n)]
  out.flags.writeable = False
  return out
