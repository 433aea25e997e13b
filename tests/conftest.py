"""Shared fixtures: the embedded Fashion-MNIST, loaded once per session; a session-wide XLA
compilation cache."""

import atexit
import os
import shutil
import sys
import tempfile

import ml_collections
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

# One persistent XLA compilation cache for the session, inherited by the subprocesses tests start
# (CLI runs, the study): a program compiled once (same model, method, shapes, XLA flags) is
# loaded instead of compiled again. Set before anything imports jax; a user's own setting wins.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
  os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="uat_jax_test_xla_")
  atexit.register(shutil.rmtree, os.environ["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.2")


def fmnist_data_config(**overrides):
  from uat_jax import data
  c = ml_collections.ConfigDict(dict(name="fashion_mnist", data_dir="",
                                     manual_dir=data.DEFAULT_FASHION_MNIST_DIR, download=False,
                                     augment="default"))
  c.update(overrides)
  return c


@pytest.fixture(scope="session")
def fmnist():
  """{"train": Split, "test": Split} of the real Fashion-MNIST."""
  from uat_jax import data
  c = fmnist_data_config()
  return {"train": data.load_split(c, "train"), "test": data.load_split(c, "test")}


def load_config(arg):
  """configs/fashion_mnist.py:<arg> as the CLI would build it (unlocked copy for tests)."""
  from uat_jax import config_lib
  return config_lib.from_file("configs/fashion_mnist.py", arg)


def build_trainer(config, num_steps, mesh):
  """(model, init_state, train_step) for Fashion-MNIST, wired as train_and_evaluate wires them;
  `init_state()` gives a fresh state from config.seed."""
  from uat_jax import data, models, train
  spec = data.get_spec("fashion_mnist")
  model = train.build_model(config, spec)
  schedule = train.create_learning_rate_schedule(config.optimizer, num_steps)
  tx = train.create_optimizer(config.optimizer, schedule)
  step = train.make_train_step(config, model, spec, schedule, mesh)
  return model, lambda: train.prepare_state(
      step, train.create_train_state(config, model, spec, tx, mesh)), step


def run_script(source: str, timeout: int = 600):
  """Runs Python source in a fresh interpreter without the caller's XLA_FLAGS (scripts that
  simulate devices or enable float64 set their own before importing jax); fails the test with
  the script's stderr if it fails."""
  import subprocess
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  proc = subprocess.run([sys.executable, "-c", source], env=env, capture_output=True, text=True,
                        timeout=timeout)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return proc
