"""Several hosts, simulated: two local processes over jax.distributed (gloo on CPU), 4 simulated
devices each, train and evaluate like one process with 8 devices."""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO

CONFIG = "--config=" + os.path.join(REPO, "configs", "fashion_mnist.py") + ":at_entm,runlocal"
FLAGS = ["--config.num_train_steps=6", "--config.checkpoint_every_steps=3",
         "--config.log_every_steps=3", "--config.eval.every_steps=6",
         "--config.eval.num_examples=128", "--config.eval.batch_size=64",
         "--config.eval.pgd_steps=2", "--config.attack.steps=2", "--config.batch_size=64"]


def env_with_devices(n):
  return dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={n}")


def free_port():
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def final_state(workdir):
  import jax
  from conftest import load_config
  from uat_jax import data, sharding, train
  config = load_config("at_entm,runlocal")
  spec = data.get_spec("fashion_mnist")
  model = train.build_model(config, spec, for_training=False)
  state, step = train.restore_newest(workdir, config, model, spec, sharding.make_mesh(1))
  return step, [np.asarray(x) for x in jax.tree.leaves(
      (state.params, state.opt_state, state.batch_stats, state.step, state.key))]


@pytest.mark.slow
def test_two_processes_train_and_evaluate_like_one_process_with_as_many_devices(tmp_path):
  two, one = str(tmp_path / "two_processes"), str(tmp_path / "one_process")
  port = free_port()
  procs = [subprocess.Popen(
      [sys.executable, "-m", "uat_jax.main", CONFIG, f"--workdir={two}", *FLAGS, "--multihost",
       f"--coordinator_address=localhost:{port}", "--num_processes=2", f"--process_id={i}"],
      cwd=REPO, env=env_with_devices(4), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
      text=True) for i in (0, 1)]
  single = subprocess.run([sys.executable, "-m", "uat_jax.main", CONFIG, f"--workdir={one}",
                           *FLAGS], cwd=REPO, env=env_with_devices(8), capture_output=True,
                          text=True, timeout=600)
  outs = [p.communicate(timeout=600) for p in procs]
  for p, (out, err) in zip(procs, outs):
    assert p.returncode == 0, err[-3000:]
  assert single.returncode == 0, single.stderr[-3000:]
  assert "Process 0 of 2" in outs[0][1] and "Process 1 of 2" in outs[1][1]
  assert "on 8 device(s)" in outs[0][1] and "on 8 device(s)" in single.stderr

  # Logging and files where they belong: the summary and metrics once, from process 0.
  assert "| clean accuracy" in outs[0][0] and "| clean accuracy" not in outs[1][0]
  lines = lambda w: open(os.path.join(w, "metrics.jsonl")).read().splitlines()
  assert len(lines(two)) == len(lines(one))

  (step2, leaves2), (step1, leaves1) = final_state(two), final_state(one)
  assert step2 == step1 == 6 and len(leaves2) == len(leaves1)
  for a, b in zip(leaves2, leaves1):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  # The reported evaluation agrees too.
  summary = lambda text: [l for l in text.splitlines() if l.startswith("| ")]
  assert summary(outs[0][0]) == summary(single.stdout)

  # Evaluation and the Jacobian comparison over both processes give the single process's numbers,
  # written once.
  def launch(*args):
    port = free_port()
    return [subprocess.Popen(
        [sys.executable, "-m", "uat_jax.main", *args, "--multihost",
         f"--coordinator_address=localhost:{port}", "--num_processes=2", f"--process_id={i}"],
        cwd=REPO, env=env_with_devices(4), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True) for i in (0, 1)]

  def finish(procs):
    outs = [p.communicate(timeout=600) for p in procs]
    for p, (out, err) in zip(procs, outs):
      assert p.returncode == 0, err[-3000:]
    return outs

  evals = ["--mode=evaluate", "--config.evals.preset=quick", "--config.evals.eps=(0.1,)",
           "--config.evals.num_examples=64", "--config.evals.batch_size=32",
           "--config.evals.checks=False"]
  jac = ["--mode=jacobian", "--config.jacobian.num_examples=16", "--config.jacobian.power_iters=5",
         "--config.jacobian.chunk_size=8", "--config.jacobian.adversarial=False",
         "--config.jacobian.outputs=('logits',)"]
  procs = launch(*evals, f"--workdir={two}")  # both at once, as in training
  single = subprocess.run([sys.executable, "-m", "uat_jax.main", *evals, f"--workdir={one}"],
                          cwd=REPO, env=env_with_devices(8), capture_output=True, text=True,
                          timeout=600)
  outs = finish(procs)
  assert single.returncode == 0, single.stderr[-3000:]
  assert "| PGD-20 |" in outs[0][0] and "| PGD-20 |" not in outs[1][0]
  results = {w: json.load(open(os.path.join(w, "eval", "results.json"))) for w in (two, one)}
  for name in ("FGSM", "PGD-20", "CW-20"):
    assert (results[two]["attacks"][name]["accuracy"]
            == results[one]["attacks"][name]["accuracy"]), name
  assert results[two]["clean_accuracy"] == results[one]["clean_accuracy"]

  # The Jacobian comparison runs on both processes (each on its own devices) and reports once;
  # the two workdirs hold the same model (checked above to 1e-5), so the same norms.
  outs = finish(launch(*jac, f"--workdir={two}", f"--workdir={one}"))
  assert "| clean | logits/fro |" in outs[0][0] and "logits/fro" not in outs[1][0]
  norms = np.load(os.path.join(two, "jacobian", "norms.npz"))
  other = np.load(os.path.join(one, "jacobian", "norms.npz"))
  assert norms["clean/logits/fro"].shape == (16,)
  for k in norms.files:
    np.testing.assert_allclose(norms[k], other[k], rtol=1e-3)
