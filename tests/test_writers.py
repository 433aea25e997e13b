"""The metric writers (uat_jax/writers.py): TensorBoard reads back what the event files hold, and
the progress report's lines and scalars. That training imports no TensorFlow is checked on a CLI
run (tests/test_main.py)."""

import numpy as np

from tests.helpers import absl_log
from uat_jax import writers


def test_tensorboard_reads_the_scalars_and_hyperparameters_back(tmp_path):
  from tensorboard.backend.event_processing import event_accumulator
  from tensorboard.plugins.hparams import plugin_data_pb2
  from tensorboard.util import tensor_util
  w = writers.TensorBoardWriter(str(tmp_path))
  w.write_hparams({"attack.eps": 0.1, "method": "at", "model.depth": 34, "normalize": True})
  w.write_scalars(10, {"train/loss": 1.25, "eval/pgd_accuracy": np.float32(0.5)})
  w.write_scalars(20, {"train/loss": 0.75})
  w.close()
  acc = event_accumulator.EventAccumulator(str(tmp_path),
                                           size_guidance={event_accumulator.TENSORS: 0})
  acc.Reload()
  curve = lambda tag: [(e.step, float(tensor_util.make_ndarray(e.tensor_proto)))
                       for e in acc.Tensors(tag)]
  assert curve("train/loss") == [(10, 1.25), (20, 0.75)]  # exact in float32
  assert curve("eval/pgd_accuracy") == [(10, 0.5)]
  assert set(acc.PluginTagToContent("scalars")) == {"train/loss", "eval/pgd_accuracy"}
  content = acc.PluginTagToContent("hparams")["_hparams_/session_start_info"]
  info = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info
  assert info.hparams["attack.eps"].number_value == 0.1
  assert info.hparams["method"].string_value == "at"
  assert info.hparams["normalize"].bool_value


def test_progress_reports_rate_eta_and_the_time_of_timed_parts(monkeypatch):
  clock = [100.0]
  monkeypatch.setattr(writers.time, "monotonic", lambda: clock[0])

  class Scalars:
    def __init__(self):
      self.written = []

    def write_scalars(self, step, scalars):
      self.written.append((step, dict(scalars)))

  out = Scalars()
  progress = writers.Progress(100, out, every_steps=10)
  with absl_log() as lines:
    progress(1)  # the first step after a start: the reference point, no report
    for step in range(2, 21):
      clock[0] += 0.5
      if step == 15:
        with progress.timed("pgd"):
          clock[0] += 1.0
      progress(step)
  assert [s for s, _ in out.written] == [10, 20]
  assert out.written[0][1] == {"steps_per_sec": 2.0, "uptime": 4.5}
  reports = [line for line in lines if line.startswith("Progress: ")]
  assert reports[0] == "Progress: 2.0 steps/s, 10.0% (10/100), ETA: 0m"
  # Steps 11-20 took 6 s (one second of it in "pgd"); 80 steps left at 10/6 steps/s is 48 s.
  assert reports[1] == "Progress: 1.7 steps/s, 20.0% (20/100), ETA: 0m (0m : 9.5% pgd)"
