"""Session fixtures: the real Fashion-MNIST (whole, through TFDS, and a small slice read once from
the IDX files) and a session-wide XLA compilation cache. Shared helpers: tests/helpers.py."""

import atexit
import os
import shutil
import tempfile

import pytest

# One persistent XLA compilation cache for the session, inherited by the subprocesses tests start
# (CLI runs, the study, tests/programs): a program compiled once (same model, method, shapes, XLA
# flags) is loaded instead of compiled again. Set before anything imports jax; a user's own
# setting wins. pytest-xdist workers inherit the controller's directory (the controller removes
# it at exit).
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
  os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="uat_jax_test_xla_")
  atexit.register(shutil.rmtree, os.environ["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.2")


@pytest.fixture(scope="session")
def fmnist():
  """{"train": Split, "test": Split}: the whole real Fashion-MNIST through the TFDS builder."""
  from tests import helpers
  from uat_jax import data
  c = helpers.fmnist_data_config()
  return {"train": data.load_split(c, "train"), "test": data.load_split(c, "test")}


@pytest.fixture(scope="session")
def small_fmnist():
  """{"train": 4,096, "test": 1,000} first examples of the real Fashion-MNIST, read once per
  session straight from the IDX files: for unit tests that need real images but not TFDS."""
  from tests import helpers
  return helpers.small_fmnist()


def pytest_collection_modifyitems(config, items):
  """The slow end-to-end tests first: with several workers (pytest -n) the longest tests then
  start at once instead of forming the tail of the run."""
  items.sort(key=lambda item: item.get_closest_marker("slow") is None)


@pytest.fixture(scope="session")
def trained_model(small_fmnist, tmp_path_factory, worker_id):
  """(model, variables) of a small CNN after 100 standard-training steps on 4,096 real
  training images (the evaluation and interop tests' model). Trained once per test run: under
  pytest -n the first worker that needs it trains it and leaves its variables in the run's
  temporary folder (under a lock), and the other workers read them (bit-identical)."""
  from tests.helpers import load_config, train_variables
  config = load_config("standard,runlocal")
  if worker_id == "master":  # no pytest -n: nothing to share
    return train_variables(config, small_fmnist["train"], 100)
  import jax
  from flax import serialization
  from uat_jax import data, lock, train
  shared = tmp_path_factory.getbasetemp().parent  # this run's, above every worker's own folder
  path = shared / "trained_model.msgpack"
  with lock.lock(str(shared / "trained_model_lock"), "training the tests' model", wait=True,
                 every_process=True):
    if not path.exists():
      model, variables = train_variables(config, small_fmnist["train"], 100)
      path.write_bytes(serialization.msgpack_serialize(jax.device_get(variables)))
      return model, variables
  variables = jax.device_put(serialization.msgpack_restore(path.read_bytes()))
  return train.build_model(config, data.get_spec("fashion_mnist")), variables
