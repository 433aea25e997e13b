"""The metric writers of a training run: the log, TensorBoard event files and metrics.jsonl,
and the progress report (steps/s, ETA, time per evaluator).

Each writer has the methods of a clu MetricWriter (write_scalars, write_hparams, flush, close and
the others), so code written against clu's interface takes them; they are written here rather
than taken from clu.metric_writers because importing that package imports TensorFlow (its
SummaryWriter uses tf.summary), about 4 s of every command's start on 2 CPU cores, and a
training process needs TensorFlow for nothing else (the datasets are read as arrays). The event
files are TensorBoard's own format, written with TensorBoard's protos and record writer (the
scalars as the `scalars` plugin's tensor summaries, the hyper-parameters as the `hparams`
plugin's session summary, as tf.summary writes them), so `tensorboard --logdir W` reads them.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from typing import Any, Iterator, Optional, Sequence

from absl import logging

from uat_jax import files


def _format(value) -> str:
  return f"{value:.6g}" if isinstance(value, float) else str(value)


class LogWriter:
  """One log line per call: "[step] name=value, ..." (names sorted), "[Hyperparameters] {...}"."""

  def write_scalars(self, step, scalars):
    logging.info("[%d] %s", step, ", ".join(f"{k}={_format(v)}" for k, v in sorted(
        scalars.items())))

  def write_hparams(self, hparams):
    logging.info("[Hyperparameters] %s", dict(hparams))

  def flush(self):
    pass

  def close(self):
    pass


class TensorBoardWriter:
  """Scalars and hyper-parameters in a TensorBoard event file in `logdir`
  (events.out.tfevents.<time>.<host>.<pid>.v2, one per writer). A write the filesystem refuses
  raises OSError naming the file."""

  def __init__(self, logdir: str):
    from tensorboard.compat.proto import event_pb2  # protos only: no TensorFlow
    from tensorboard.summary.writer.record_writer import RecordWriter
    os.makedirs(logdir, exist_ok=True)
    self.path = os.path.join(logdir, f"events.out.tfevents.{int(time.time()):010d}."
                             f"{socket.gethostname()}.{os.getpid()}.v2")
    self._event = event_pb2.Event
    with self._io():
      self._file = open(self.path, "ab")
      self._records = RecordWriter(self._file)
    self._write(self._event(wall_time=time.time(), file_version="brain.Event:2"))

  @contextlib.contextmanager
  def _io(self) -> Iterator[None]:
    try:
      yield
    except OSError as e:
      if e.filename:
        raise
      raise OSError(e.errno, e.strerror, self.path) from e

  def _write(self, event) -> None:
    with self._io():
      self._records.write(event.SerializeToString())

  def write_scalars(self, step, scalars):
    from tensorboard.compat.proto import summary_pb2
    from tensorboard.plugins.scalar import metadata
    from tensorboard.util import tensor_util
    values = [summary_pb2.Summary.Value(
        tag=k, tensor=tensor_util.make_tensor_proto(float(v)),
        metadata=metadata.create_summary_metadata(display_name=k, description=""))
        for k, v in scalars.items()]
    self._write(self._event(wall_time=time.time(), step=int(step),
                            summary=summary_pb2.Summary(value=values)))

  def write_hparams(self, hparams):
    from tensorboard.plugins.hparams import summary_v2
    summary = summary_v2.hparams_pb({k: v if isinstance(v, (bool, int, float, str)) else str(v)
                                     for k, v in hparams.items()})
    self._write(self._event(wall_time=time.time(), step=0, summary=summary))

  def flush(self):
    with self._io():
      self._records.flush()

  def close(self):
    with self._io():
      self._records.close()


class MultiWriter:
  """Every call goes to each of `writers`, in order."""

  def __init__(self, writers: Sequence[Any]):
    self._writers = list(writers)

  def __getattr__(self, name):
    def call(*args, **kwargs):
      for w in self._writers:
        getattr(w, name)(*args, **kwargs)
    return call


def default_writer(workdir: str, just_logging: bool = False) -> MultiWriter:
  """The log and, unless `just_logging` (the other hosts of a multi-host run), TensorBoard
  event files in `workdir` (clu's create_default_writer, synchronous)."""
  return MultiWriter([LogWriter()] + ([] if just_logging else [TensorBoardWriter(workdir)]))


class JsonlWriter:
  """Appends one JSON line {"step": s, name: value, ...} per write_scalars call, each handed to
  the OS as it is written (a killed process loses none it wrote).

  Resuming from the checkpoint at `resume_step` first rewrites the file (atomically) without what
  the interrupted process wrote after that step, a line cut off by a kill, and, from step 0,
  everything, so that the resumed run's lines follow without duplicates; a record it would write
  again unchanged (the same step and names, as when a finished run is evaluated again) is
  skipped. Scalars and hyper-parameters only.
  """

  def __init__(self, path: str, resume_step: int = 0):
    old = files.read_records(path) if resume_step > 0 and os.path.exists(path) else []
    kept = [r for r in old if "hparams" in r or r.get("step", resume_step + 1) <= resume_step]
    self._logged = {(resume_step, frozenset(r) - {"step"}) for r in kept
                    if r.get("step") == resume_step}
    files.write_atomic(path, "".join(json.dumps(r) + "\n" for r in kept))
    self._file = open(path, "a", encoding="utf-8", buffering=1)  # line-buffered

  def write_scalars(self, step, scalars):
    if (int(step), frozenset(scalars)) in self._logged:
      return
    record = {"step": int(step), **{k: float(v) for k, v in scalars.items()}}
    self._file.write(json.dumps(record) + "\n")

  def write_hparams(self, hparams):
    self._file.write(json.dumps({"hparams": {k: str(v) for k, v in hparams.items()}}) + "\n")

  def flush(self):
    self._file.flush()

  def close(self):
    self._file.close()


def _duration(seconds: float) -> str:
  minutes, seconds = divmod(int(seconds), 60)
  hours, minutes = divmod(minutes, 60)
  return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m"


class Progress:
  """The progress of a training run, reported at every `every_steps`-th step, at least every
  `every_secs` seconds and at the last step: one log line "Progress: 4.8 steps/s, 3.7%
  (117/3125), ETA: 10m (0m : 20.6% pgd)" (the share of the time so far spent in each `timed`
  part) and the scalars steps_per_sec and uptime (seconds since the start) to `writer`."""

  def __init__(self, num_train_steps: int, writer=None, every_steps: Optional[int] = None,
               every_secs: float = 60.0):
    self._num_steps, self._writer = num_train_steps, writer
    self._every_steps, self._every_secs = every_steps, every_secs
    self._t0 = time.monotonic()
    self._previous: Optional[tuple[int, float]] = None  # (step, time) of the last report
    self._parts: dict[str, float] = {}

  def __call__(self, step: int) -> None:
    now = time.monotonic()
    if self._previous is None:  # the first step after a start or resume (compilation)
      self._previous = (step, now)
      return
    last_step, last_time = self._previous
    due = ((self._every_steps and step % self._every_steps == 0)
           or now - last_time >= self._every_secs or step == self._num_steps)
    if step == last_step or not due:
      return
    rate = (step - last_step) / max(now - last_time, 1e-9)
    message = f"{rate:.1f} steps/s"
    if self._num_steps > 0:
      message += (f", {100 * step / self._num_steps:.1f}% ({step}/{self._num_steps}), "
                  f"ETA: {_duration((self._num_steps - step) / rate)}")
    if self._parts:
      total = now - self._t0
      message += f" ({_duration(total)} : " + ", ".join(
          f"{100 * t / total:.1f}% {name}" for name, t in sorted(self._parts.items())) + ")"
    logging.info("Progress: %s", message)
    if self._writer is not None:
      self._writer.write_scalars(step, {"steps_per_sec": rate, "uptime": now - self._t0})
    self._previous = (step, now)

  @contextlib.contextmanager
  def timed(self, name: str) -> Iterator[None]:
    """Adds the time spent in the block to part `name` (the block's results are host values, so
    its device work has finished when it ends)."""
    start = time.monotonic()
    try:
      yield
    finally:
      self._parts[name] = self._parts.get(name, 0.0) + time.monotonic() - start
