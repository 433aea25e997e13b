"""Measured training throughput: the table that cost estimates (`--dry_run`) read.

Each row is one measurement of one train step on one device:

    {"device": "NVIDIA H200", "backend": "gpu", "step": "at", "model": "preact_resnet18",
     "image": [32, 32, 3], "dtype": "bfloat16", "batch": 512, "attack_steps": 10,
     "images_per_s": 8771.0, "gflop_per_image": 23.3, "compile_s": 21.0,
     "versions": {"jax": "0.11.2", "flax": "0.12.10"}, "date": "2026-12-04", "source": "..."}

The package ships the rows measured by the project (uat_jax/throughput.json); `uat-jax bench`
measures the user's own device and writes rows in the same format to the user's table
(~/.cache/uat_jax/throughput.json, or $UAT_JAX_THROUGHPUT), which lookups prefer. A
configuration that was not measured is estimated from the nearest measured row and labelled so:
from another batch of the same model, or scaled by FLOPs per image from another model.
"""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Any, Optional

from uat_jax import files

PACKAGED = os.path.join(os.path.dirname(os.path.abspath(__file__)), "throughput.json")
KEY = ("device", "step", "model", "image", "dtype", "batch", "attack_steps")


def user_table() -> str:
  """Where `uat-jax bench` writes and lookups first read: $UAT_JAX_THROUGHPUT or the user's
  cache folder."""
  return os.environ.get("UAT_JAX_THROUGHPUT") or os.path.join(files.user_cache_dir(),
                                                               "throughput.json")


def read(path: str) -> list[dict[str, Any]]:
  """The rows of a table file ([] when it does not exist)."""
  if not os.path.exists(path):
    return []
  rows = files.read_json(path)
  if not isinstance(rows, list):
    raise ValueError(f"{path} is not a throughput table (a JSON list of rows): move it aside "
                     "and run `uat-jax bench` again")
  return rows


def tables() -> list[list[dict[str, Any]]]:
  """The tables lookups read, the preferred first: the user's, then the packaged one."""
  return [read(user_table()), read(PACKAGED)]


def add(path: str, new_rows: list[dict[str, Any]]) -> None:
  """Writes `new_rows` into the table at `path`, replacing rows of the same key."""
  keys = {tuple(_key(r)) for r in new_rows}
  kept = [r for r in read(path) if tuple(_key(r)) not in keys]
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  files.write_json(path, kept + list(new_rows))


def _key(row):
  return [tuple(v) if isinstance(v, list) else v for v in (row.get(k) for k in KEY)]


@dataclasses.dataclass(frozen=True)
class Rate:
  """An estimated throughput: images/s, how it was obtained, and the row it came from."""
  images_per_s: float
  basis: str  # "measured", "measured at batch 512", "scaled by FLOPs from ..."
  row: dict[str, Any]


def describe(row: dict[str, Any]) -> str:
  step = f"AT-{row['attack_steps']}" if row["step"] == "at" else row["step"]
  return f"{row['model']} {row['dtype']} batch {row['batch']} {step}"


def devices(rows_of_tables: Optional[list[list[dict]]] = None) -> list[str]:
  """The measured devices, the user's first."""
  seen: list[str] = []
  for rows in tables() if rows_of_tables is None else rows_of_tables:
    for r in rows:
      if r["device"] not in seen:
        seen.append(r["device"])
  return seen


def lookup(*, model: str, image, dtype: str, batch: int, attack_steps: int,
           gflop_per_image: Optional[float], device: Optional[str] = None,
           rows_of_tables: Optional[list[list[dict]]] = None) -> Optional[Rate]:
  """The throughput of a train step on `device` (default: the first measured device, the
  user's own if they ran `uat-jax bench`): measured if that configuration was, else from the
  same model at the nearest measured batch, else scaled by FLOPs per image from the nearest
  measured row of the same dtype (small models reach a lower share of a GPU's peak than the
  row they are scaled from, so such estimates are optimistic). None when the device has no row
  of that dtype."""
  all_tables = tables() if rows_of_tables is None else rows_of_tables
  device = device or next(iter(devices(all_tables)), None)
  step = "at" if attack_steps else "standard"
  want = {"step": step, "model": model, "image": list(image), "dtype": dtype,
          "attack_steps": attack_steps}
  for rows in all_tables:  # the user's table first: a row there beats any packaged one
    rows = [r for r in rows if r["device"] == device]
    same = [r for r in rows if all(r.get(k) == v for k, v in want.items())]
    exact = [r for r in same if r["batch"] == batch]
    if same:
      r = exact[-1] if exact else min(same, key=lambda r: abs(math.log(r["batch"] / batch)))
      basis = "measured" if exact else f"measured at batch {r['batch']}"
      rate = float(r["images_per_s"])
      # The same model and attack with more work per image (a regularizer's extra clean
      # forward pass): scaled by the FLOPs.
      if gflop_per_image and r.get("gflop_per_image") and (
          abs(gflop_per_image / r["gflop_per_image"] - 1) > 0.02):
        rate *= r["gflop_per_image"] / gflop_per_image
        basis += f", scaled by FLOPs ({gflop_per_image / r['gflop_per_image'] - 1:+.0%})"
      return Rate(rate, basis, r)
  if not gflop_per_image:
    return None
  for rows in all_tables:
    rows = [r for r in rows if r["device"] == device and r["dtype"] == dtype
            and r.get("gflop_per_image") and r["step"] == step]
    if rows:
      r = min(rows, key=lambda r: (abs(math.log(r["gflop_per_image"] / gflop_per_image)),
                                   abs(math.log(r["batch"] / batch))))
      rate = r["images_per_s"] * r["gflop_per_image"] / gflop_per_image
      return Rate(float(rate), f"scaled by FLOPs from {describe(r)}", r)
  return None


def schedule(hours: list[float], slots: int) -> float:
  """Wall-clock hours of independent runs on `slots` parallel device groups: each run, longest
  first, goes to the group that frees first (within 4/3 of the best possible)."""
  loads = [0.0] * max(1, slots)
  for h in sorted(hours, reverse=True):
    i = loads.index(min(loads))
    loads[i] += h
  return max(loads)
