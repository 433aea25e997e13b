"""Several hosts, simulated: two local processes over jax.distributed (gloo on CPU), 4 simulated
devices each, train, evaluate and compute Jacobians like one process with 8 devices.

Training computes in float64 (config.dtype, JAX_ENABLE_X64): the two layouts add the same terms
in other orders (the two-process all-reduce against the one-process one), so in float32 a few
parameters drift apart by float32 rounding amplified over the steps; in float64 they differ by
float64 rounding only, and a bound built from it (helpers.float64_rtol) can never be exceeded by
chance, while any wiring error (a shard lost or counted twice) exceeds it by orders of magnitude.
"""

import json
import os
import shutil
import socket
import subprocess
import sys

import numpy as np
import pytest

from tests import helpers

CONFIG = f"--config={helpers.FMNIST_CONFIG}:at_entm,runlocal"
STEPS, BATCH = 6, 64
FLAGS = [f"--config.num_train_steps={STEPS}", "--config.checkpoint_every_steps=3",
         "--config.log_every_steps=1", f"--config.evals.pgd.every_steps={STEPS}",
         "--config.evals.pgd.num_examples=64", "--config.evals.pgd.batch_size=64",
         "--config.evals.pgd.steps=2", "--config.attack.steps=2", f"--config.batch_size={BATCH}",
         "--config.dtype=float64"]
# The largest reduction is a convolution's weight gradient over batch x 28 x 28 terms; each of
# the steps may round a float32 parameter or Adam moment differently (2 ulps a step).
RTOL = helpers.float64_rtol(BATCH * 28 * 28) + 2 * STEPS * helpers.U32


def env_with_devices(n):
  return helpers.env_without_xla_flags(
      XLA_FLAGS=helpers.simulated_devices(n), JAX_ENABLE_X64="1")


def free_port():
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def launch_two(*args):
  """Two processes of `uat_jax.main *args` over jax.distributed, 4 devices each."""
  port = free_port()
  return [subprocess.Popen(
      [sys.executable, "-m", "uat_jax.main", *args, "--multihost",
       f"--coordinator_address=localhost:{port}", "--num_processes=2", f"--process_id={i}"],
      cwd=helpers.REPO, env=env_with_devices(4), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
      text=True) for i in (0, 1)]


def finish(procs):
  outs = [p.communicate(timeout=600) for p in procs]
  for p, (_, err) in zip(procs, outs):
    assert p.returncode == 0, err[-3000:]
  return outs


def run_one(*args):
  """`uat_jax.main *args` in one process with 8 devices."""
  proc = helpers.run_cli(*args, env=env_with_devices(8))
  assert proc.returncode == 0, proc.stderr[-3000:]
  return proc


def summary(text):
  """{metric: value} of the training summary table."""
  rows = [line.strip("| ").split(" | ") for line in text.splitlines() if line.startswith("| ")]
  return {name.strip(): float(value) for name, value in rows[2:]}


def assert_close(a, b, rtol, what):
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol * max(np.abs(b).max(), 1e-30),
                             err_msg=what)


@pytest.mark.slow
def test_two_processes_train_evaluate_and_compute_jacobians_like_one_process(tmp_path):
  two, one = str(tmp_path / "two_processes"), str(tmp_path / "one_process")
  procs = launch_two(CONFIG, f"--workdir={two}", *FLAGS)
  single = run_one(CONFIG, f"--workdir={one}", *FLAGS)
  outs = finish(procs)
  assert "Process 0 of 2" in outs[0][1] and "Process 1 of 2" in outs[1][1]
  assert "on 8 device(s)" in outs[0][1] and "on 8 device(s)" in single.stderr

  # Logging and files where they belong: the summary and metrics once, from process 0, with the
  # same steps as the single process (exact).
  assert "| clean accuracy" in outs[0][0] and "| clean accuracy" not in outs[1][0]
  records = lambda w: [json.loads(line) for line in open(os.path.join(w, "metrics.jsonl"))]
  steps = lambda w: [(r.get("step"), sorted(r)) for r in records(w)]
  assert steps(two) == steps(one)
  # The same training, to float64 rounding: every logged metric and the final state.
  for r2, r1 in zip(records(two), records(one)):
    for k in r1:
      if k not in ("step", "hparams") and "steps_per_sec" not in k and "uptime" not in k:
        assert_close(r2[k], r1[k], RTOL, f"{k} at step {r1['step']}")
  config = helpers.load_config("at_entm,runlocal")
  (step2, state2), (step1, state1) = helpers.final_state(two, config), helpers.final_state(one,
                                                                                           config)
  assert step2 == step1 == STEPS
  leaves2, leaves1 = helpers.state_leaves(state2), helpers.state_leaves(state1)
  assert len(leaves2) == len(leaves1)
  for a, b in zip(leaves2, leaves1):
    assert a.dtype == b.dtype and a.shape == b.shape
    assert_close(a, b, RTOL, "final state")
  # The summary prints 4 decimals: equal values may print one unit of the last digit apart.
  s2, s1 = summary(outs[0][0]), summary(single.stdout)
  assert s2.keys() == s1.keys() and all(abs(s2[k] - s1[k]) <= 1.5e-4 for k in s1), (s2, s1)

  # Evaluation over both processes gives the single process's numbers on the same checkpoint,
  # exactly: each device holds 4 of the 32 examples of a batch in both layouts and attacks are
  # per example, so every device runs the same program on the same inputs.
  copy = str(tmp_path / "copy")
  shutil.copytree(two, copy)
  evals = ["--mode=evaluate", "--config.evals.suite.preset=quick",
           "--config.evals.suite.eps=(0.1,)", "--config.evals.suite.num_examples=64",
           "--config.evals.suite.batch_size=32", "--config.evals.suite.checks=False"]
  procs = launch_two(*evals, f"--workdir={two}")
  single = run_one(*evals, f"--workdir={copy}")
  outs = finish(procs)
  assert "| PGD-20 |" in outs[0][0] and "| PGD-20 |" not in outs[1][0]
  results = {w: json.load(open(os.path.join(w, "eval", "results.json"))) for w in (two, copy)}
  for name in ("FGSM", "PGD-20", "CW-20"):
    assert (results[two]["attacks"][name]["accuracy"]
            == results[copy]["attacks"][name]["accuracy"]), name
  assert results[two]["clean_accuracy"] == results[copy]["clean_accuracy"]

  # The Jacobian comparison runs on both processes (each on its own devices) and reports once.
  # The two workdirs hold the same model to RTOL; a network of 4 layers moves its Jacobian norms
  # by at most about 4 x that relative change of its parameters: 10 x RTOL.
  jac = ["--mode=jacobian", "--config.evals.jacobian.num_examples=16",
         "--config.evals.jacobian.power_iters=5", "--config.evals.jacobian.chunk_size=8",
         "--config.evals.jacobian.adversarial=False",
         "--config.evals.jacobian.outputs=('logits',)"]
  outs = finish(launch_two(*jac, f"--workdir={two}", f"--workdir={one}"))
  assert "| clean | logits/fro |" in outs[0][0] and "logits/fro" not in outs[1][0]
  norms = np.load(os.path.join(two, "jacobian", "norms.npz"))
  other = np.load(os.path.join(one, "jacobian", "norms.npz"))
  assert norms["clean/logits/fro"].shape == (16,)
  for k in norms.files:
    assert_close(norms[k], other[k], 10 * RTOL, k)
