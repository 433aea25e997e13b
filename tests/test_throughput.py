"""The measured throughput table and `uat-jax bench` (uat_jax.throughput, uat_jax.benchmark):
lookups prefer the user's rows, say how each rate was obtained, and the benchmark writes rows
that the estimates then use."""

import json
import os
from unittest import mock

import pytest

from uat_jax import throughput


def _row(device="gpu0", model="preact_resnet18", dtype="float32", batch=128, rate=1000.0,
         gflop=20.0, step="at"):
  return {"device": device, "step": step, "model": model, "image": [32, 32, 3], "dtype": dtype,
          "batch": batch, "attack_steps": 10 if step == "at" else 0, "images_per_s": rate,
          "gflop_per_image": gflop}


def _lookup(tables, **kw):
  args = dict(model="preact_resnet18", image=(32, 32, 3), dtype="float32", batch=128,
              attack_steps=10, gflop_per_image=20.0)
  args.update(kw)
  return throughput.lookup(rows_of_tables=tables, **args)


def test_lookups_say_how_each_rate_was_obtained():
  packaged = [_row(rate=1000.0), _row(batch=512, rate=2000.0), _row(model="wide_resnet",
                                                                      gflop=200.0, rate=100.0)]
  assert _lookup([[], packaged]).basis == "measured"
  assert _lookup([[], packaged]).images_per_s == 1000.0
  r = _lookup([[], packaged], batch=1024)  # the nearest measured batch (log scale)
  assert (r.images_per_s, r.basis) == (2000.0, "measured at batch 512")
  r = _lookup([[], packaged], model="small_cnn", gflop_per_image=2.0)  # another model: FLOPs
  assert r.images_per_s == pytest.approx(1000.0 * 20.0 / 2.0)
  assert r.basis == "scaled by FLOPs from preact_resnet18 float32 batch 128 AT-10"
  r = _lookup([[], packaged], gflop_per_image=24.0)  # more work per image (a clean pass more)
  assert r.images_per_s == pytest.approx(1000.0 * 20 / 24) and "scaled by FLOPs (+20%)" in r.basis
  assert _lookup([[], packaged], dtype="bfloat16") is None  # never across dtypes
  # The user's own row wins, and the user's device is the default one.
  mine = [_row(device="mine", rate=5.0)]
  assert _lookup([mine, packaged]).images_per_s == 5.0
  assert _lookup([mine, packaged], device="gpu0").images_per_s == 1000.0
  assert throughput.devices([mine, packaged]) == ["mine", "gpu0"]


def test_the_packaged_table_holds_the_measured_gpu_rows():
  rows = throughput.read(throughput.PACKAGED)
  keys = [tuple(map(str, (r[k] for k in throughput.KEY))) for r in rows]
  assert len(keys) == len(set(keys))
  r18 = _lookup([rows], device="NVIDIA H200", gflop_per_image=23.267)
  assert r18.basis == "measured" and 3000 < r18.images_per_s < 5000
  assert all(r["versions"]["jax"] and r["date"] and r["gflop_per_image"] > 0 for r in rows)


def test_the_schedule_places_the_longest_runs_first():
  assert throughput.schedule([3, 3, 2, 2, 1], 2) == 6  # the best possible here
  assert throughput.schedule([1.0] * 8, 8) == 1.0 and throughput.schedule([2.0, 1.0], 1) == 3.0


def test_the_benchmark_writes_rows_that_the_estimate_then_uses(tmp_path, capsys):
  """`uat-jax bench` on tiny shapes (the CPU smoke case): rows in the table's format, written
  to the user's table, which the estimate of that configuration then calls measured."""
  from tests import helpers
  from uat_jax import benchmark, estimate
  table = tmp_path / "mine.json"
  with mock.patch.dict(os.environ, {"UAT_JAX_THROUGHPUT": str(table)}):
    # The standard step (the AT step's program only adds the attack loop: faster to compile)
    assert benchmark.main(["--cases=small_cnn:float32:8:standard", "--seconds=0.2"]) == 0
    rows = json.loads(table.read_text())
    assert [(r["model"], r["batch"], r["step"]) for r in rows] == [("small_cnn", 8, "standard")]
    assert rows[0]["images_per_s"] > 0 and rows[0]["gflop_per_image"] > 0
    c = helpers.load_config("standard")
    with c.unlocked():
      c.batch_size, c.model.name = 8, "small_cnn"
    e = estimate.estimate(c)
    assert e["basis"] == "measured" and e["images_per_s"] == rows[0]["images_per_s"]
  assert "wrote 1 rows" in capsys.readouterr().out
  assert benchmark.main(["--cases=resnet:float32:8"]) == 2
  assert "MODEL:DTYPE:BATCH" in capsys.readouterr().err
