"""Reliability: damaged checkpoints, non-finite losses and bad input leave finished work intact
(in process, on real Fashion-MNIST with tiny budgets). The subprocess kill tests are in
tests/test_main.py."""

import contextlib
import glob
import math
import os
import re
import shutil

import hypothesis
import numpy as np
from hypothesis import strategies as st
import pytest

import uat_jax
from tests import helpers
from tests.helpers import absl_log, load_config
from uat_jax import checkpoints, train
from uat_jax.errors import UatError


def tiny_config(**overrides):
  c = load_config("standard,runlocal")
  c.num_train_steps = 4
  c.checkpoint_every_steps = 2
  c.log_every_steps = 1
  c.evals.pgd.every_steps = 1000
  c.evals.pgd.num_examples = 100
  c.evals.pgd.steps = 2
  for key, value in overrides.items():
    section, _, name = key.rpartition(".")
    (c[section] if section else c)[name] = value
  return c


def snapshot(workdir):
  """{relative path: (size, mtime_ns, bytes)} of every file under workdir."""
  out = {}
  for path in glob.glob(os.path.join(workdir, "**"), recursive=True):
    if os.path.isfile(path):
      st = os.stat(path)
      out[os.path.relpath(path, workdir)] = (st.st_size, st.st_mtime_ns,
                                             open(path, "rb").read())
  return out


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  """A finished 4-step run with checkpoints at steps 2 and 4, and its config."""
  workdir = str(tmp_path_factory.mktemp("trained") / "w")
  config = tiny_config()
  train.train_and_evaluate(config, workdir)
  return workdir, config


def truncate_data_files(step_dir):
  """Cuts every array data file of a checkpoint in half (orbax's OCDBT stores them in `d/`
  folders, packed in an order that varies between saves): parameters and optimizer state alike
  (evaluation reads only the parameters and statistics, training also the optimizer state)."""
  files = [p for p in glob.glob(os.path.join(step_dir, "**", "d", "*"), recursive=True)
           if os.path.isfile(p)]
  assert files, f"no data files under {step_dir}"
  for path in files:
    with open(path, "r+b") as f:
      f.truncate(os.path.getsize(path) // 2)


def test_a_truncated_newest_checkpoint_is_reported_moved_aside_and_the_previous_used(
    trained, tmp_path):
  src, config = trained
  workdir = str(tmp_path / "w")
  shutil.copytree(src, workdir)
  truncate_data_files(os.path.join(workdir, "checkpoints", "4"))

  # Evaluation reads the older checkpoint and moves nothing.
  with absl_log() as lines:
    step = uat_jax.load(workdir, config=config).step
  text = "\n".join(lines)
  assert step == 2 and "checkpoint at step 4" in text and "unreadable" in text
  assert os.path.isdir(os.path.join(workdir, "checkpoints", "4"))

  # Training resumes from step 2, keeps the damaged step 4 for inspection, writes a good one.
  longer = tiny_config(num_train_steps=6)
  with absl_log() as lines:
    train.train_and_evaluate(longer, workdir)
  moved = glob.glob(os.path.join(workdir, checkpoints.CORRUPT_DIR, "4-*"))
  assert len(moved) == 1 and "Resuming from checkpoint at step 2" in "\n".join(lines)
  step, resumed = helpers.final_state(workdir, longer)

  reference = str(tmp_path / "uninterrupted")
  train.train_and_evaluate(longer, reference)
  _, expected = helpers.final_state(reference, longer)
  assert step == 6
  helpers.assert_states_equal(resumed, expected)


def test_a_flipped_bit_is_caught_by_the_checksums_and_old_checkpoints_still_restore(
    trained, tmp_path):
  """One flipped bit in an array data file (which may still decode: orbax would restore other
  parameter values) is caught by the checksums recorded at save time, and the previous
  checkpoint is used. Without checksums (checkpoints saved before they were kept) the
  checkpoint restores, with one warning. (That part runs on the file as saved: the data files are
  compressed, so whether a flipped bit still decodes depends on where it lands.)"""
  src, config = trained
  workdir = str(tmp_path / "w")
  shutil.copytree(src, workdir)
  data_files = sorted(glob.glob(os.path.join(workdir, "checkpoints", "4", "**", "d", "*"),
                                recursive=True), key=os.path.getsize)
  path = data_files[-1]  # the largest: array bytes
  with open(path, "r+b") as f:
    f.seek(os.path.getsize(path) // 2)
    byte = f.read(1)[0]
    f.seek(-1, os.SEEK_CUR)
    f.write(bytes([byte ^ 0x10]))
  with absl_log() as lines:
    step = uat_jax.load(workdir, config=config).step
  text = "\n".join(lines)
  assert step == 2, text
  assert "checkpoint at step 4" in text and "does not match the checksum" in text
  assert "Traceback" not in text

  with open(path, "r+b") as f:  # the file as saved again
    f.seek(os.path.getsize(path) // 2)
    f.write(bytes([byte]))
  shutil.rmtree(os.path.join(workdir, checkpoints.CHECKSUM_DIR))
  with absl_log() as lines:
    assert uat_jax.load(workdir, config=config).step == 4  # unverified
    uat_jax.load(workdir, config=config)
  # Once per directory, and saying what a missing record means now (not "an older version").
  assert sum("has no checksum record (written by uat_jax 0.1, whose records were written at "
             "the next save, or its record was deleted)" in line for line in lines) == 1


def test_a_checkpoint_without_orbax_metadata_restores_when_its_data_verifies(trained, tmp_path):
  """Orbax's _CHECKPOINT_METADATA deleted (the data intact): the data files match their
  records, so the checkpoint restores, with a warning naming the missing file, for evaluation
  and for training (nothing moved aside)."""
  src, config = trained
  workdir = str(tmp_path / "w")
  shutil.copytree(src, workdir)
  os.remove(os.path.join(workdir, "checkpoints", "4", checkpoints.checksums.METADATA_FILE))
  with absl_log() as lines:
    assert uat_jax.load(workdir, config=config).step == 4
    assert train.train_and_evaluate(config, workdir)["step"] == 4
  assert any("checkpoint 4" in line and "lacks orbax's _CHECKPOINT_METADATA file, but every "
             "data file matches its recorded checksum: restoring it" in line for line in lines)
  assert not os.path.exists(os.path.join(workdir, checkpoints.CORRUPT_DIR))


def test_a_checkpoint_killed_right_after_its_save_has_its_record(tmp_path):
  """SIGKILL the moment a checkpoint appears complete: its checksum record is already there (it
  is written before orbax renames the step into place), so one flipped bit in its data is found
  on the next start, which resumes from the checkpoint before it."""
  import signal
  import subprocess
  import sys
  import time
  w = str(tmp_path / "w")
  flags = ["--config=fashion_mnist:at,runlocal", f"--workdir={w}", "--config.num_train_steps=40",
           "--config.checkpoint_every_steps=10", "--config.attack.steps=1",
           "--config.evals.pgd.every_steps=1000"]
  proc = subprocess.Popen([sys.executable, "-m", "uat_jax.main", *flags], cwd=helpers.REPO,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
  ckpts, deadline = os.path.join(w, "checkpoints"), time.time() + 240
  while time.time() < deadline and proc.poll() is None and not os.path.isdir(
      os.path.join(ckpts, "20")):
    time.sleep(0.005)
  proc.send_signal(signal.SIGKILL)
  proc.communicate(timeout=60)
  steps = sorted(int(n) for n in os.listdir(ckpts) if n.isdigit())
  assert 20 in steps and steps[-1] < 40, steps
  newest = steps[-1]
  for step in steps:  # every complete checkpoint has its record
    assert os.path.exists(os.path.join(w, checkpoints.CHECKSUM_DIR, "checkpoints", f"{step}.json"))
  path = max(glob.glob(os.path.join(ckpts, str(newest), "**", "d", "*"), recursive=True),
             key=os.path.getsize)
  with open(path, "r+b") as f:
    f.seek(os.path.getsize(path) // 2)
    byte = f.read(1)[0]
    f.seek(-1, os.SEEK_CUR)
    f.write(bytes([byte ^ 0x10]))
  c = load_config("at,runlocal")
  c.num_train_steps, c.checkpoint_every_steps, c.attack.steps = 40, 10, 1
  c.evals.pgd.every_steps = 1000
  with absl_log() as lines:
    assert train.train_and_evaluate(c, w)["step"] == 40
  text = "\n".join(lines)
  assert f"checkpoint at step {newest}" in text and "does not match the checksum" in text, text
  assert f"Resuming from checkpoint at step {newest - 10}" in text
  assert os.listdir(os.path.join(w, checkpoints.CORRUPT_DIR))[0].startswith(f"{newest}-")



def test_a_damaged_checksum_record_is_named_and_its_checkpoint_verified_by_restoring(
    trained, tmp_path):
  """A record cut short (the checkpoint intact) is reported as a damaged record, naming its
  file; the checkpoint it describes restores (orbax decodes every array) and nothing is moved
  aside, also with every record damaged and by training; deleting the records and rerunning
  the training command writes them again."""
  import json
  src, config = trained
  workdir = str(tmp_path / "w")
  shutil.copytree(src, workdir)
  records = sorted(glob.glob(os.path.join(workdir, checkpoints.CHECKSUM_DIR, "checkpoints",
                                          "*.json")))
  assert [os.path.basename(r) for r in records] == ["2.json", "4.json"]
  newest = records[-1]
  with open(newest, "r+") as f:
    f.truncate(100)
  with absl_log() as lines:
    assert uat_jax.load(workdir, config=config).step == 4
  assert any(f"the checksum record {newest} is damaged" in line and "checkpoint 4 is verified "
             "by restoring it" in line for line in lines), lines
  for path in records:
    with open(path, "r+") as f:
      f.truncate(100)
  with absl_log() as lines:
    assert train.train_and_evaluate(config, workdir)["step"] == 4  # finished: resumes at 4
  assert not os.path.exists(os.path.join(workdir, checkpoints.CORRUPT_DIR))
  assert sum("is damaged" in line for line in lines) >= 1
  for path in records:
    os.remove(path)
  train.train_and_evaluate(config, workdir)
  for path in records:  # written again from the checkpoints' files
    with open(path) as f:
      assert json.load(f)["sha256"]


def test_no_readable_checkpoint_is_an_error_that_moves_nothing(trained, tmp_path):
  src, config = trained
  workdir = str(tmp_path / "w")
  shutil.copytree(src, workdir)
  for step in ("2", "4"):
    truncate_data_files(os.path.join(workdir, "checkpoints", step))
  before = snapshot(workdir)
  with pytest.raises(UatError, match="no readable checkpoint in .*step 4 failed"):
    train.train_and_evaluate(tiny_config(num_train_steps=6), workdir)
  assert snapshot(workdir) == before


def test_a_non_finite_loss_stops_training_and_keeps_the_last_checkpoint(trained, tmp_path):
  src, _ = trained
  workdir = str(tmp_path / "w")
  shutil.copytree(src, workdir)
  checkpoints_before = snapshot(os.path.join(workdir, "checkpoints"))
  exploding = tiny_config(num_train_steps=12, **{"optimizer.learning_rate": 1e30})
  with pytest.raises(UatError, match=r"non-finite train/\w+=(nan|inf|-inf) in steps \d+-\d+; "
                                     r"training stopped and the last checkpoint \(step 4\) is "
                                     r"kept: lower the learning rate"):
    train.train_and_evaluate(exploding, workdir)
  assert snapshot(os.path.join(workdir, "checkpoints")) == checkpoints_before


@pytest.mark.parametrize("overrides,message", [
    ({"data.name": "imagenet"}, "unknown dataset"),
    ({"model.name": "vgg"}, "unknown model"),
    ({"method": "mixup"}, "unknown method"),
    ({"attack.eps": 1.5}, "outside \\[0, 1\\]"),
    ({"method": "at", "attack.steps": 0}, "attack.steps=0 must be >= 1"),
    ({"regularizer.beta": -1.0}, "beta=-1.0 must be >= 0"),
    ({"regularizer.alpha": 1.0}, "must be in \\[0, 1\\)"),
    ({"evals.suite.preset": "strongest"}, "unknown evaluation preset"),
    ({"data.manual_dir": "/nonexistent", "data.data_dir": "/nonexistent/tfds"},
     "apt-get install dataset-fashion-mnist"),
    ({"model.name": "madry_cnn"}, "does not fit the config"),  # another model's checkpoint
])
def test_bad_input_touches_no_existing_files(trained, tmp_path, overrides, message):
  src, _ = trained
  workdir = str(tmp_path / "w")
  shutil.copytree(src, workdir)
  before = snapshot(workdir)
  with pytest.raises(UatError, match=message):
    train.train_and_evaluate(tiny_config(**overrides, **{"data.download": False}), workdir)
  assert snapshot(workdir) == before


def test_an_unwritable_workdir_is_reported_before_training(tmp_path):
  blocker = tmp_path / "a_file"
  blocker.write_text("not a directory")
  with pytest.raises(UatError, match="is not writable .*choose another --workdir"):
    train.train_and_evaluate(tiny_config(), str(blocker / "w"))


def test_the_best_checkpoint_is_the_best_logged_and_survives_a_resume(tmp_path):
  """best_checkpoint keeps, across a resume, the state of the evaluation with the highest logged
  validation metric (clean accuracy here: it moves every few steps of a tiny run, where PGD
  accuracy is still 0), and uat_jax.load(step="best") reads it."""
  import json
  from uat_jax import evaluators
  workdir = str(tmp_path / "w")

  def config(steps):
    c = tiny_config(num_train_steps=steps, **{"data.validation_size": 200})
    c.evals.pgd.every_steps = 2
    c.evals.pgd.num_examples = 200
    c.best_checkpoint.metric = "eval/clean_accuracy"
    return c

  for steps in (4, 8):  # the second run resumes the first
    c = config(steps)
    train.train_and_evaluate(c, workdir, evaluators=evaluators.for_training(c))
  logged = {}
  for line in open(os.path.join(workdir, "metrics.jsonl")):
    record = json.loads(line)
    if "eval/clean_accuracy" in record:
      logged[record["step"]] = record["eval/clean_accuracy"]
  assert sorted(logged) == [2, 4, 6, 8]
  kept = os.listdir(os.path.join(workdir, checkpoints.BEST_DIR))
  assert len([k for k in kept if k.isdigit()]) == 1
  best = uat_jax.load(workdir, step="best")
  assert logged[best.step] == max(logged.values())
  assert uat_jax.load(workdir).step == 8


def test_one_writer_per_workdir_and_a_dead_holder_is_taken_over(tmp_path):
  """Two real processes: while one holds a workdir's lock, training there refuses with one line
  naming the holder and writes nothing; after the holder is SIGKILLed (the kernel drops its
  POSIX lock) the next writer takes the lock over and logs whom it replaced."""
  import json
  import socket
  import subprocess
  import sys
  from uat_jax import lock
  w = tmp_path / "w"
  w.mkdir()
  holder = subprocess.Popen(
      [sys.executable, "-c", "import sys\nfrom uat_jax import lock\n"
       "with lock.lock(sys.argv[1], 'training'):\n  print('locked', flush=True)\n"
       "  sys.stdin.read()\n", str(w)],
      cwd=helpers.REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
  try:
    assert holder.stdout.readline().strip() == "locked"
    before = snapshot(str(w))
    # (A UatError is one `error:` line with exit status 2 on the command line: test_main.py.)
    with pytest.raises(UatError, match=f"^{w} is in use by pid {holder.pid} on "
                                       f"{socket.gethostname()} \\(training since "):
      train.train_and_evaluate(tiny_config(), str(w))
    # Evaluating a workdir that trains is refused before anything is restored, naming the way
    # to evaluate it meanwhile.
    from uat_jax import evaluators
    with pytest.raises(UatError, match=r"\(training since .*: wait for it to finish, or evaluate "
                                       r"it meanwhile with --config.evals.output_dir=DIR"):
      evaluators.evaluate_workdir(tiny_config(), str(w))
    assert snapshot(str(w)) == before  # nothing touched
  finally:
    holder.kill()  # SIGKILL: no release, the holder's description stays in the file
    holder.wait()
  with contextlib.ExitStack() as stack:
    records = stack.enter_context(absl_log())
    stack.enter_context(lock.lock(str(w), "evaluation"))
    assert json.loads((w / lock.LOCK_FILE).read_text())["pid"] == os.getpid()
    with pytest.raises(UatError, match=f"in use by pid {os.getpid()} .*evaluation since"):
      with lock.lock(str(w), "training"):  # the same process: refused too
        pass
    assert json.loads((w / lock.LOCK_FILE).read_text())["pid"] == os.getpid()  # still held
  assert any(f"took over the lock of pid {holder.pid}" in r for r in records)
  assert (w / lock.LOCK_FILE).read_text() == ""  # released normally: nothing to take over


def test_results_go_elsewhere_and_a_read_only_workdir_says_how(trained, tmp_path, monkeypatch):
  """--mode=evaluate / jacobian with evals.output_dir write nothing into the workdir; without
  one, a workdir that cannot be written gets one line naming the fix before any attack runs."""
  import errno
  from uat_jax import evaluators, jacobian_compare
  src, _ = trained
  before = snapshot(src)
  out = tmp_path / "results"
  c = tiny_config(**{"evals.output_dir": str(out), "evals.suite.preset": "quick",
                     "evals.suite.num_examples": 20, "evals.suite.eps": (0.1,),
                     "evals.suite.checks": False, "evals.jacobian.num_examples": 4,
                     "evals.jacobian.power_iters": 2, "evals.jacobian.adversarial": False})
  evaluators.evaluate_workdir(c, src)
  jacobian_compare.analyze_workdirs(c, [src])
  assert snapshot(src) == before
  assert (out / "eval" / "results.json").exists()
  assert (out / "jacobian" / "w" / "norms.npz").exists()
  assert (out / "jacobian" / "comparison.md").exists()

  # A read-only filesystem (running as root, permissions cannot make one: the OS error the
  # kernel gives for a read-only mount is raised for every open inside the workdir instead).
  real_open = os.open

  def read_only(path, flags, *args):
    if str(path).startswith(src) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
      raise OSError(errno.EROFS, os.strerror(errno.EROFS), path)
    return real_open(path, flags, *args)

  monkeypatch.setattr(os, "open", read_only)
  c = tiny_config(**{"evals.suite.preset": "quick", "evals.suite.num_examples": 20})
  for run in (lambda: evaluators.evaluate_workdir(c, src),
              lambda: jacobian_compare.analyze_workdirs(c, [src])):
    with pytest.raises(UatError, match=r"cannot write in .*\(Read-only file system\): write the "
                                       r"results elsewhere with --config.evals.output_dir=DIR"):
      run()
  assert snapshot(src) == before


def _fields(node, kind, prefix=""):
  """The dotted names of a config's fields whose values are of type `kind` (bools excluded)."""
  for key, value in node.items():
    if hasattr(value, "items"):
      yield from _fields(value, kind, f"{prefix}{key}.")
    elif isinstance(value, kind) and not isinstance(value, bool):
      yield f"{prefix}{key}"


FLOAT_FIELDS = sorted(_fields(load_config("at_entm,runlocal"), float))


@hypothesis.settings(max_examples=60, deadline=None)
@hypothesis.given(field=hypothesis.strategies.sampled_from(FLOAT_FIELDS),
                  value=hypothesis.strategies.sampled_from([math.nan, math.inf, -math.inf]))
def test_every_float_field_rejects_non_finite_values_in_one_line(field, value):
  """The validator (what the CLI runs before touching the workdir; the CLI's exit status and
  nothing-written are checked in tests/test_main.py) refuses nan and +-inf in every float field
  with one line naming the field."""
  from uat_jax import validation
  c = load_config("at_entm,runlocal")
  section, _, name = field.rpartition(".")
  (c[section] if section else c)[name] = value
  with pytest.raises(UatError) as e:
    validation.validate(c)
  message = str(e.value)
  assert "\n" not in message and field.split(".")[-1] in message, message


# Each integer field's valid range [low, high] (None: unbounded); attack.unroll also takes -1.
# num_train_steps <= 0 is valid: num_epochs then decides (documented in the config reference).
INT_DOMAINS = {
    "attack.steps": (1, None), "attack.unroll": (1, None), "batch_size": (1, None),
    "checkpoint_every_steps": (1, None), "data.train_size": (0, None),
    "data.validation_size": (0, None), "evals.jacobian.chunk_size": (1, None),
    "evals.jacobian.every_steps": (0, None), "evals.jacobian.num_examples": (0, None),
    "evals.jacobian.power_iters": (1, None), "evals.jacobian.seed": (0, 2 ** 32 - 1),
    "evals.pgd.batch_size": (1, None), "evals.pgd.every_steps": (0, None),
    "evals.pgd.num_examples": (0, None), "evals.pgd.steps": (0, None),
    "evals.suite.batch_size": (1, None), "evals.suite.every_steps": (0, None),
    "evals.suite.num_examples": (0, None), "evals.suite.seed": (0, 2 ** 32 - 1),
    "log_every_steps": (1, None), "max_checkpoints": (1, None), "model.depth": (10, None),
    "model.width": (1, None), "num_train_steps": (None, 2 ** 31 - 1),
    "optimizer.warmup_steps": (0, None), "seed": (0, 2 ** 32 - 1),
}


def test_every_integer_field_has_a_domain():
  assert sorted(_fields(load_config("at_entm,runlocal"), int)) == sorted(INT_DOMAINS)


@st.composite
def _out_of_domain(draw):
  field = draw(st.sampled_from(sorted(INT_DOMAINS)))
  low, high = INT_DOMAINS[field]
  sides = ([st.integers(max_value=low - 1)] if low is not None else []) + (
      [st.integers(min_value=high + 1)] if high is not None else [])
  value = draw(st.one_of(sides))
  hypothesis.assume(not (field == "attack.unroll" and value == -1))
  return field, value


@hypothesis.settings(max_examples=80, deadline=None)
@hypothesis.given(case=_out_of_domain())
def test_every_integer_field_rejects_values_outside_its_domain_in_one_line(case):
  """The validator refuses a generated value outside each integer field's domain (including
  values far outside it) with one line naming the field, before anything is written (the CLI's
  exit status and untouched workdir for such values: tests/test_main.py)."""
  from uat_jax import validation
  field, value = case
  c = load_config("at_entm,runlocal")
  section, _, name = field.rpartition(".")
  with c.unlocked():
    (c[section] if section else c)[name] = value
  with pytest.raises(UatError) as e:
    validation.validate(c)
  message = str(e.value)
  assert "\n" not in message and name in message, message


@pytest.mark.parametrize("field,value,message", [
    ("seed", -1, "seed=-1 must be in \\[0, 2\\*\\*32\\)"),
    ("seed", 2 ** 32, "must be in \\[0, 2\\*\\*32\\)"),
    ("num_epochs", math.inf, "num_epochs=inf must be a finite number"),
    ("optimizer.learning_rate", math.inf, "learning_rate=inf must be a finite number"),
    ("optimizer.momentum", 1.0, "momentum=1.0 must be in \\[0, 1\\)"),
    ("optimizer.warmup_steps", -1, "warmup_steps=-1 must be >= 0"),
])
def test_values_outside_a_fields_domain_are_one_line(field, value, message):
  """Values that passed validation and failed late (after files were written) are refused
  first (the command line turns these into one `error:` line and exit 2: tests/test_main.py)."""
  from uat_jax import validation
  c = load_config("at_entm,runlocal")
  section, _, name = field.rpartition(".")
  (c[section] if section else c)[name] = value
  with pytest.raises(UatError, match=message):
    validation.validate(c)


def test_a_write_past_orbaxs_time_limit_is_one_line_naming_what_is_kept():
  """A process suspended (SIGSTOP) for longer than orbax's limit on background writes fails the
  write in flight with orbax's TimeoutError, raised from the wait's own (as in its ChainedFuture);
  it becomes one line naming the write, the kept checkpoint and the fix. Other errors pass."""
  def orbax_timeout():
    try:
      raise TimeoutError("Timed out after 1200 seconds.")
    except TimeoutError as e:
      raise TimeoutError("ChainedFuture completed 2/4 futures but timed out after 2316.35 "
                         "seconds.") from e
  kept = lambda: "checkpoint 2340 (the last complete one) is kept"  # noqa: E731
  with pytest.raises(UatError) as raised:
    with checkpoints.storage_guard("writing checkpoint 2730 in w/checkpoints", kept):
      orbax_timeout()
  message = str(raised.value)
  assert message.startswith("writing checkpoint 2730 in w/checkpoints did not finish within "
                            "orbax's time limit") and "\n" not in message
  assert "checkpoint 2340 (the last complete one) is kept: rerun the same command" in message
  with pytest.raises(KeyError):
    with checkpoints.storage_guard("writing checkpoint 1 in w", kept):
      raise KeyError("not a storage failure")


def test_a_full_disk_is_one_line_and_the_next_start_cleans_up(tmp_path, size="3m"):
  """Training on a real 3 MiB filesystem (full after one checkpoint; with 2 MiB, before any,
  the error says "no checkpoint in W/checkpoints is complete yet", as
  test_what_a_failed_write_keeps_is_said_truthfully checks): the checkpoint write that fills it
  ends the run with one `error:` line (exit 2) naming that write's step (the one whose temporary
  folder is left) and truthfully what is kept; the complete checkpoint before it still restores,
  and the next start, once space is freed, removes the unfinished checkpoint's temporary
  folder."""
  import subprocess
  mnt = tmp_path / "small"
  mnt.mkdir()
  mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mnt)],
                           capture_output=True, text=True)
  if mounted.returncode != 0:
    pytest.skip(f"cannot mount a small tmpfs here (root needed): {mounted.stderr.strip()}")
  try:
    w = str(mnt / "w")
    flags = ["--config=fashion_mnist:at,runlocal", f"--workdir={w}",
             "--config.checkpoint_every_steps=2", "--config.evals.pgd.every_steps=1000",
             "--config.attack.steps=1"]
    full = helpers.run_cli(*flags, "--config.num_train_steps=12", timeout=300)
    last = full.stderr.strip().splitlines()[-1]
    assert full.returncode == 2, full.stderr[-2000:]
    # No traceback: orbax's logged errors (ending in tensorstore's ValueError) are filtered, and
    # so are the "Event loop is closed" errors tensorstore's callbacks report as unraisable.
    for noise in ("Traceback", "ValueError: RESOURCE_EXHAUSTED"):
      assert noise not in full.stderr, full.stderr[-3000:]
    ckpts = os.path.join(w, "checkpoints")
    done = sorted(int(s) for s in os.listdir(ckpts) if s.isdigit())
    partial = glob.glob(os.path.join(ckpts, f"*{checkpoints.TMP_SUFFIX}*"))
    # Which write meets the full disk first varies: usually a checkpoint, sometimes a metrics or
    # event file; each ends in one line naming it.
    failed = re.match(r"error: [Nn]o space left on device while writing checkpoint (\d+) in ",
                      last)
    if failed:  # the step named is the one whose write was left unfinished; what is kept, true
      assert [os.path.basename(p).split(".")[0] for p in partial] == [failed.group(1)], last
      kept = (f"checkpoint {done[-1]} (the last complete one) is kept" if done
              else f"no checkpoint in {ckpts} is complete yet")
      assert kept in last, last
    elif "checksum records" in last:  # the record of a complete step: what is kept is named
      assert re.match(r"error: [Nn]o space left on device while writing the checksum records of "
                      r"\S+; (checkpoint \d+ \(the last complete one\) is kept|no checkpoint)",
                      last), last
    else:  # a metrics or event file
      assert re.match(r"error: [Nn]o space left on device while writing \S+: free space", last), \
          last
      assert "checkpoints completed before are kept" in last, last
    if not done:
      return
    assert uat_jax.load(w).step == done[-1]  # the last complete checkpoint is intact

    # The user frees space (the filesystem grows: how full the failed run left it varies, and a
    # completely full one takes not even the lock file), then starts again.
    grown = subprocess.run(["mount", "-o", "remount,size=16m", str(mnt)], capture_output=True,
                           text=True)
    assert grown.returncode == 0, grown.stderr
    c = load_config("at,runlocal")
    c.num_train_steps, c.checkpoint_every_steps, c.attack.steps = done[-1], 2, 1
    c.evals.pgd.every_steps, c.evals.pgd.num_examples = 1000, 100
    with absl_log() as lines:
      train.train_and_evaluate(c, w)
    assert not partial or any("a checkpoint whose writing did not finish" in line
                              for line in lines)
    assert not glob.glob(os.path.join(w, "checkpoints", f"*{checkpoints.TMP_SUFFIX}*"))
  finally:
    subprocess.run(["umount", str(mnt)], capture_output=True)


def test_what_a_failed_write_keeps_is_said_truthfully(tmp_path):
  """The kept-checkpoint text of a storage error: none complete yet, then the newest complete
  step (a folder orbax never finished is not one)."""
  mngr = checkpoints.manager(str(tmp_path / "w"), 3)
  try:
    assert checkpoints.kept_checkpoint(mngr) == (
        f"no checkpoint in {mngr.directory} is complete yet")
    for step in (2, 4):
      mngr.save(step, args=checkpoints.ocp.args.StandardSave({"a": np.zeros(3)}))
      mngr.wait_until_finished()
    os.makedirs(os.path.join(str(mngr.directory), f"6{checkpoints.TMP_SUFFIX}-1"))
    assert checkpoints.kept_checkpoint(mngr) == "checkpoint 4 (the last complete one) is kept"
  finally:
    mngr.close()


def test_an_error_exit_never_hangs_on_a_stuck_background_thread():
  """A non-daemon thread that never ends (as orbax's writers can after an I/O error) would make
  the interpreter wait at exit forever; the error exit is bounded (here 1 s)."""
  import subprocess
  import sys
  import time
  program = ("import threading, time\n"
             "threading.Thread(target=time.sleep, args=(3600,)).start()\n"
             "from uat_jax import cli\n"
             "cli.fail('disk full')\n")
  t0 = time.time()
  proc = subprocess.run([sys.executable, "-c", program], cwd=helpers.REPO, capture_output=True,
                        text=True, timeout=120,
                        env=dict(os.environ, UAT_EXIT_GRACE_SECONDS="1"))
  assert proc.returncode == 2 and proc.stderr.strip() == "error: disk full"
  assert time.time() - t0 < 60
