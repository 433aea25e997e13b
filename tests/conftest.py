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
def trained_model(small_fmnist):
  """(model, variables) of a small CNN after 100 standard-training steps on 4,096 real
  training images (the evaluation and interop tests' model)."""
  from tests.helpers import load_config, train_variables
  return train_variables(load_config("standard,runlocal"), small_fmnist["train"], 100)

