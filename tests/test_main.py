"""The CLI end to end on real Fashion-MNIST: train, kill, resume; bad input."""

import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest

from tests import helpers
from tests.helpers import REPO, run_cli

CONFIG = f"--config={helpers.FMNIST_CONFIG}:at_entm,runlocal"


def cli(workdir, *flags):
  return [sys.executable, "-m", "uat_jax.main", CONFIG, f"--workdir={workdir}", *flags]


def committed_steps(workdir):
  ckpt = os.path.join(workdir, "checkpoints")
  if not os.path.isdir(ckpt):
    return []
  return sorted(int(d) for d in os.listdir(ckpt) if d.isdigit())


def wait_for_checkpoint_after(proc, workdir, step, timeout=300):
  """Polls until a checkpoint newer than `step` is committed (or the process ends)."""
  deadline = time.time() + timeout
  while proc.poll() is None and time.time() < deadline:
    if any(s > step for s in committed_steps(workdir)):
      return
    time.sleep(0.05)


def kill_at(proc, workdir, phase, delay):
  """SIGKILLs `proc` at a moment of `phase`: "start" (`delay` s after launch: imports, data,
  compilation, restore), "step" (`delay` s after metrics.jsonl next grows: mid-training) or
  "checkpoint" (as soon as a checkpoint's temporary folder appears: during the write). Returns
  False when the process ended first."""
  metrics, ckpt = os.path.join(workdir, "metrics.jsonl"), os.path.join(workdir, "checkpoints")
  seen = None  # (inode, size) of metrics.jsonl; a resuming run first rewrites it (a new inode)
  start, deadline = time.time(), time.time() + 300
  while proc.poll() is None and time.time() < deadline:
    if phase == "start" and time.time() - start >= delay:
      break
    if phase == "step" and os.path.exists(metrics):
      st = os.stat(metrics)
      if seen is not None and st.st_ino == seen[0] and st.st_size > seen[1]:
        time.sleep(delay)
        break
      if seen is None or st.st_ino != seen[0]:
        seen = (st.st_ino, st.st_size)
    if phase == "checkpoint" and os.path.isdir(ckpt) and any(
        "orbax-checkpoint-tmp" in d for d in os.listdir(ckpt)):
      break
    time.sleep(0.005)
  if proc.poll() is not None:
    return False
  proc.send_signal(signal.SIGKILL)
  proc.communicate()
  return True


@pytest.mark.slow
def test_sigterm_and_sigkill_then_resume_equal_an_uninterrupted_run(tmp_path):
  """SIGTERM checkpoints and exits with 143. Then a soak: SIGKILL at 3 moments in a row (one in
  start-up: imports, compilation, restore; one mid-step; one during a checkpoint write; the
  order and delays drawn from a fixed seed), each time restarted; every rerun resumes, and the
  final state is bit-identical to an uninterrupted run's (data order, augmentation and attack
  keys come from (seed, step)), with no temporary checkpoint folder left and no line of
  metrics.jsonl written twice. One kill per phase: the test budget (each kill is a training
  process's start, ~5 s on 2 cores); every phase's recovery path runs once per suite."""
  flags = ["--config.num_train_steps=40", "--config.checkpoint_every_steps=5",
           "--config.log_every_steps=2", "--config.evals.pgd.every_steps=20",
           "--config.evals.pgd.num_examples=100", "--config.attack.steps=3"]
  reference = str(tmp_path / "uninterrupted")
  done = subprocess.run(cli(reference, *flags), cwd=REPO, capture_output=True, text=True,
                        timeout=600)
  assert done.returncode == 0, done.stderr[-3000:]

  workdir = str(tmp_path / "w")
  proc = subprocess.Popen(cli(workdir, *flags), cwd=REPO, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)
  wait_for_checkpoint_after(proc, workdir, 0)
  proc.send_signal(signal.SIGTERM)
  out, err = proc.communicate(timeout=300)
  assert proc.returncode == 143, err[-3000:]
  last = err.strip().splitlines()[-1]
  assert last.startswith("preempted (SIGTERM): checkpoint saved at step "), last
  stopped_at = int(last.split("at step ")[1].split()[0])
  assert 5 <= stopped_at < 40 and max(committed_steps(workdir)) == stopped_at

  rng = random.Random(20261125)
  phases = ["start", "step", "checkpoint"]
  rng.shuffle(phases)
  kills = []
  for phase in phases:
    delay = rng.uniform(0.3, 2.5) if phase == "start" else rng.uniform(0.0, 0.2)
    before = max(committed_steps(workdir), default=0)
    proc = subprocess.Popen(cli(workdir, *flags), cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    if not kill_at(proc, workdir, phase, delay):
      assert proc.returncode == 0  # it finished first: start the soak's training again
      assert max(committed_steps(workdir)) == 40
      break
    kills.append((phase, before))
  assert len(kills) == len(phases) or max(committed_steps(workdir)) == 40, kills

  killed_at = max(committed_steps(workdir), default=0)
  done = subprocess.run(cli(workdir, *flags), cwd=REPO, capture_output=True, text=True,
                        timeout=600)
  assert done.returncode == 0, done.stderr[-3000:]
  assert (f"Training small_cnn (at_entm) on fashion_mnist for 40 steps from step {killed_at}"
          in done.stderr)
  assert "| clean accuracy" in done.stdout and "PGD-20 accuracy (eps=0.1)" in done.stdout
  config = helpers.load_config("at_entm,runlocal")
  (step, resumed), (ref_step, expected) = (helpers.final_state(workdir, config),
                                           helpers.final_state(reference, config))
  assert step == ref_step == 40
  helpers.assert_states_equal(resumed, expected)  # same program, same order: bit-identical
  leftovers = [d for d in os.listdir(os.path.join(workdir, "checkpoints")) if "tmp" in d]
  assert leftovers == []

  def logged(w):  # (step, names) of every line but the timing ones, which differ between runs
    out = []
    for line in open(os.path.join(w, "metrics.jsonl")):
      r = json.loads(line)
      names = tuple(sorted(set(r) - {"step", "steps_per_sec", "uptime"}))
      if names:
        out.append((r.get("step"), names))
    return out

  mine, theirs = logged(workdir), logged(reference)
  assert len(set(mine)) == len(mine)  # no line twice
  # Every line of the uninterrupted run, and at most one more: the train metrics flushed at the
  # SIGTERM's checkpoint (if that was no logging step).
  assert set(theirs) <= set(mine) and {s for s, _ in set(mine) - set(theirs)} <= {stopped_at}

  files = os.listdir(workdir)
  assert "config.json" in files and any(f.startswith("events.out.tfevents") for f in files)
  assert json.load(open(os.path.join(workdir, "config.json")))["method"] == "at_entm"
  records = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
  steps = [r["step"] for r in records if "train/loss" in r]
  assert steps[-1] == 40 and 40 in [r["step"] for r in records if "eval/pgd_accuracy" in r]
  assert {"train/accuracy_adv", "train/accuracy_clean", "train/entropy", "train/grad_norm",
          "train/learning_rate", "train/ce"} <= set(records[-2]) | set(records[-1])

  # Rerunning a finished run trains nothing and reports the same checkpoint.
  lines = logged(workdir)
  again = subprocess.run(cli(workdir, *flags), cwd=REPO, capture_output=True, text=True,
                         timeout=600)
  assert again.returncode == 0 and "Resuming from checkpoint at step 40" in again.stderr
  assert logged(workdir) == lines  # its evaluation is not logged a second time

  # A SIGKILLed evaluation resumes without redoing finished attacks and gives the numbers of an
  # evaluation that ran through.
  evaluate = ["--mode=evaluate", "--config.evals.suite.num_examples=100",
              "--config.evals.suite.batch_size=50", "--config.evals.suite.eps=(0.1, 0.2)",
              "--config.evals.suite.checks=False"]  # checks resume too: tests/test_evaluate.py
  ref = run_cli(*evaluate, f"--workdir={reference}")
  assert ref.returncode == 0, ref.stderr[-3000:]
  state_dir = os.path.join(workdir, "eval", "state")
  proc = subprocess.Popen([sys.executable, "-m", "uat_jax.main", *evaluate,
                           f"--workdir={workdir}"], cwd=REPO, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)
  deadline = time.time() + 300
  while proc.poll() is None and time.time() < deadline and not (
      os.path.isdir(state_dir) and any(f.endswith(".npy") for f in os.listdir(state_dir))):
    time.sleep(0.05)
  proc.send_signal(signal.SIGKILL)
  proc.communicate()
  finished = [f for f in os.listdir(state_dir) if f.endswith(".npy")]
  assert finished and not os.path.exists(os.path.join(workdir, "eval", "results.json"))
  resumed = run_cli(*evaluate, f"--workdir={workdir}")
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert resumed.stderr.count("loaded the finished result") >= len(finished)
  out = lambda w: strip_times(json.load(open(os.path.join(w, "eval", "results.json"))))
  assert out(workdir)["attacks"] == out(reference)["attacks"]


@pytest.mark.parametrize("flag,message", [
    ("--config.attack.epsx=0.1", "); list the fields and their values with `uat-jax config "
     "show RECIPE:METHOD`"),
    ("--config.attack.eps=abc", "could not convert"),
    ("--config.attack.eps=-0.1", "eps=-0.1 is outside [0, 1]"),  # every value: test_train.py
    ("--config.data.manual_dir=/nonexistent", "apt-get install dataset-fashion-mnist"),
    ("--config.batch_size=100", "batch_size=100 must be a positive multiple of the 8 devices"),
    ("unwritable", "is not writable"),
    ("--config=fashion:at", "'fashion' is neither a file nor a packaged recipe (cifar10, "),
    ("stray", "unexpected arguments ['stray']: every setting is a flag"),
])
def test_bad_input_is_one_line_and_nonzero(tmp_path, flag, message):
  """Each: exit status 2, one `error:` line naming problem and fix, no traceback, and nothing
  created (tests/test_reliability.py: nothing changed in an existing workdir either)."""
  workdir = tmp_path / "w"
  env = dict(os.environ, TFDS_DATA_DIR=str(tmp_path / "tfds"))  # nothing prepared there
  if flag == "--config.batch_size=100":
    env["XLA_FLAGS"] = helpers.simulated_devices(8)
  if flag == "unwritable":  # a workdir below a file (root can write to read-only directories)
    (tmp_path / "file").write_text("")
    workdir, flag = tmp_path / "file" / "w", "--config.num_train_steps=1"
  proc = subprocess.run(cli(str(workdir), flag), cwd=REPO, capture_output=True, text=True,
                        timeout=300, env=env)
  assert proc.returncode == 2, proc.stderr[-2000:]
  last = proc.stderr.strip().splitlines()[-1]
  assert last.startswith("error: ") and message in last, last
  assert "Traceback" not in proc.stderr
  assert not workdir.exists()  # bad input creates nothing


def strip_times(result):
  """A result without what differs between two runs of the same evaluation: the seconds each
  attack took and the date in its provenance."""
  for r in result["attacks"].values():
    r.pop("seconds")
  result["provenance"].pop("date")
  return result


@pytest.mark.slow
def test_cli_train_evaluate_jacobian_end_to_end(tmp_path):
  """Two real runlocal workdirs; evaluate one with the paper preset, the other as surrogate;
  then compare their input-Jacobian norms."""
  std = "--config=fashion_mnist:standard,runlocal"
  short = ["--config.num_train_steps=60", "--config.evals.pgd.every_steps=60",
           "--config.evals.pgd.num_examples=200"]
  target, surrogate = str(tmp_path / "target"), str(tmp_path / "surrogate")
  # Training imports no TensorFlow (about 4 s of every start on 2 CPU cores): the datasets are
  # read as arrays once TFDS has prepared them (done here first, as by any earlier run) and the
  # event files are written without it. Python lists every import (PYTHONPROFILEIMPORTTIME).
  from uat_jax import data
  for split in ("train", "test"):
    data.load_split(helpers.load_config("standard,runlocal").data, split)
  for workdir, seed in ((target, 0), (surrogate, 1)):
    done = run_cli(std, f"--workdir={workdir}", f"--config.seed={seed}", *short,
                   env=dict(os.environ, PYTHONPROFILEIMPORTTIME="1") if seed == 0 else None)
    assert done.returncode == 0, done.stderr[-3000:]
    imported = {line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines()
                if line.startswith("import time:")}
    assert seed == 1 or ("uat_jax.train" in imported and "tensorflow" not in imported)
  assert any(f.startswith("events.out.tfevents") for f in os.listdir(target))

  # The runs trained with Adam; evaluation with other optimizer settings reads the same
  # checkpoint (inference restores parameters and statistics only) and calls nothing unreadable.
  optimizer = ["--config.optimizer.name=sgd", "--config.optimizer.weight_decay=5e-4"]
  flags = ["--mode=evaluate", f"--workdir={target}", "--config.evals.suite.preset=paper",
           *optimizer, f"--config.evals.suite.surrogate_workdir={surrogate}",
           "--config.evals.suite.num_examples=32", "--config.evals.suite.eps=1/10,2/10",
           "--config.evals.suite.batch_size=32"]
  first = run_cli(*flags)
  assert first.returncode == 0, first.stderr[-3000:]
  assert "unreadable" not in first.stderr
  out = os.path.join(target, "eval")
  assert {"results.json", "results.csv", "results.md", "masking_checks.md",
          "accuracy_vs_eps.png"} <= set(os.listdir(out))
  result = json.load(open(os.path.join(out, "results.json")))
  assert result["num_examples"] == 32 and result["checkpoint_step"] == 60
  from uat_jax.version import VERSION
  p = result["provenance"]  # what produced the result, beside the schema of the file
  assert result["schema_version"] == 2 and p["uat_jax"] == VERSION and p["jax"] == jax_version()
  assert p["threat_model"] == {"norm": "linf", "eps": [0.1, 0.2]} and p["seed"] == 0
  assert p["backend"] == "cpu" and p["device_count"] >= 1 and p["git"]["commit"]
  assert list(result["attacks"]) == ["FGSM", "PGD-20", "PGD-100", "CW-100", "Transfer-PGD-20"]
  acc = {n: r["accuracy"] for n, r in result["attacks"].items()}
  assert acc["Transfer-PGD-20"]["0.1"] >= acc["PGD-20"]["0.1"] - 1 / 32  # black-box is weaker
  assert "| Transfer-PGD-20 | black-box |" in open(os.path.join(out, "results.md")).read()
  assert "| PGD-100 | white-box |" in first.stdout and "ETA" in first.stderr
  assert open(os.path.join(out, "accuracy_vs_eps.png"), "rb").read(8) == b"\x89PNG\r\n\x1a\n"
  rows = open(os.path.join(out, "results.csv")).read().splitlines()
  assert rows[0] == "attack,kind,eps,accuracy,cumulative_accuracy,attacked" and len(rows) == 15

  # A rerun loads every finished attack instead of recomputing it: after a SIGKILL mid-way in
  # test_sigterm_and_sigkill_then_resume_equal_an_uninterrupted_run.

  jac = run_cli("--mode=jacobian", f"--workdir={target}", f"--workdir={surrogate}",
                "--config.evals.jacobian.num_examples=20",
                "--config.evals.jacobian.power_iters=10",
                f"--config.evals.jacobian.baseline={surrogate}", *optimizer)
  assert jac.returncode == 0, jac.stderr[-3000:]
  assert "unreadable" not in jac.stderr
  out = os.path.join(target, "jacobian")
  assert {"norms.npz", "summary.json", "comparison.md", "comparison.csv",
          "histogram.png"} <= set(os.listdir(out))
  assert {"norms.npz", "summary.json"} <= set(os.listdir(os.path.join(surrogate, "jacobian")))
  table = open(os.path.join(out, "comparison.md")).read()
  assert "| clean | logits/fro |" in table and "| adversarial | probs/spectral |" in table
  assert "'ratio' = the norm ratio this / baseline" in table and " ratio 1.00 " in table
  assert "target (standard)" in table and "surrogate (standard)" in table
  rows = open(os.path.join(out, "comparison.csv")).read().splitlines()
  baseline_rows = [r for r in rows[1:] if r.startswith(surrogate + ",")]
  assert baseline_rows and all(r.endswith(",1.0") for r in baseline_rows)
  import numpy as np
  summary = json.load(open(os.path.join(out, "summary.json")))
  assert summary["provenance"]["uat_jax"] == VERSION and "date" in summary["provenance"]
  norms = np.load(os.path.join(out, "norms.npz"))
  assert norms["clean/logits/fro"].shape == (20,) and np.all(norms["clean/logits/fro"] > 0)

  # The README's Python blocks run as written, in a fresh interpreter, on the trained workdir.
  blocks = helpers.readme_python_blocks()
  assert any("uat_jax.load(" in b for b in blocks)
  program = "\n".join(blocks).replace('"workdirs/quickstart"', repr(target))
  proc = subprocess.run([sys.executable, "-c", program], cwd=REPO, capture_output=True,
                        text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "| PGD-20 | white-box |" in proc.stdout


def test_evaluate_and_jacobian_errors_are_one_line(tmp_path):
  """Bad evaluation/Jacobian input: one line, exit status 2, nothing written. The CLI for the
  checks in main and a sample of the rest; every case in process (same UatError, same line)."""
  from uat_jax import evaluators, jacobian_compare
  from uat_jax import config as config_lib
  from uat_jax.errors import UatError
  workdir, other = tmp_path / "w", tmp_path / "other"
  no_config = run_cli("--mode=evaluate", f"--workdir={workdir}", timeout=300)
  assert no_config.returncode == 2 and "no config.json in" in no_config.stderr.splitlines()[-1]
  workdir.mkdir()
  (workdir / "config.json").write_text(config_lib.base_config().to_json_best_effort())
  for flags, message in (
      (["--mode=jacobian", f"--workdir={workdir}"], "no checkpoint in"),
      (["--mode=evaluate", f"--workdir={workdir}", f"--workdir={other}"], "takes one --workdir")):
    proc = run_cli(*flags, timeout=300)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert message in proc.stderr.strip().splitlines()[-1], proc.stderr[-500:]

  def config(**overrides):
    c = config_lib.load_workdir_config(str(workdir))
    for key, value in overrides.items():
      *path, name = key.split(".")
      node = c
      for part in path:
        node = node[part]
      node[name] = value
    return c

  for c, message in (
      (config(**{"evals.suite.preset": "strongest"}), "unknown evaluation preset"),
      (config(**{"evals.suite.eps": (0.1, 1.5)}), "eps=1.5 is outside \\[0, 1\\]"),
      (config(**{"evals.split": "train"}), "evals.split='train': choose test or validation"),
      (config(**{"evals.split": "validation"}), "evals.split=validation needs held-out"),
      (config(), "no checkpoint in")):
    with pytest.raises(UatError, match=message):
      evaluators.evaluate_workdir(c, str(workdir))
  for c, workdirs, message in (
      (config(), [workdir, other], "no config.json in"),
      (config(**{"evals.jacobian.baseline": "elsewhere"}), [workdir],
       "is not one of the --workdir"),
      (config(**{"evals.jacobian.outputs": ("softmax",)}), [workdir], "unknown Jacobian output"),
      (config(), [workdir], "no checkpoint in")):
    with pytest.raises(UatError, match=message):
      jacobian_compare.analyze_workdirs(c, [str(w) for w in workdirs])
  assert sorted(os.listdir(workdir)) == ["config.json"] and not other.exists()



def test_eps_fractions_are_read_in_every_eps_field_and_lists_of_them():
  """8/255 in --config.<...>.eps and .step_size, alone or in a list with or without parentheses,
  becomes a decimal the config parser reads (the CLI end to end: the evaluation in
  test_cli_train_evaluate_jacobian_end_to_end passes --config.evals.suite.eps=1/10,2/10)."""
  from uat_jax import cli
  assert cli.with_fractions(["--config.attack.eps=8/255", "--config.evals.x.eps=(2/255, 0.1)",
                             "--config.attack.step_size=2/255", "--config.seed=1/2"]) == [
      f"--config.attack.eps={8 / 255!r}", f"--config.evals.x.eps=({2 / 255!r}, 0.1)",
      f"--config.attack.step_size={2 / 255!r}", "--config.seed=1/2"]
  assert cli.with_fractions(["--config.evals.suite.eps=4/255,8/255"]) == [
      f"--config.evals.suite.eps=({4 / 255!r},{8 / 255!r})"]
  # What the parser makes of a word in a list field (a string) is one line, not a TypeError.
  from uat_jax import validation
  from uat_jax.errors import UatError
  c = helpers.load_config("at,runlocal")
  c.evals.suite.eps = ("abc",)
  with pytest.raises(UatError, match=r"evals.suite.eps=\('abc',\) must hold numbers on the "
                                     r"\[0, 1\] scale, e.g. --config.evals.suite.eps=0.1,0.2"):
    validation.validate(c)

def jax_version() -> str:
  from importlib.metadata import version
  return version("jax")
