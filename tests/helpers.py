"""What several test files share: the repository root, configs as the CLI builds them, a trainer
wired as training wires it, restored states, and programs run in fresh interpreters.

Imported normally (`from tests import helpers`): pytest puts the repository root on sys.path
because tests/ is a package.
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import sys

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FMNIST_CONFIG = "fashion_mnist"  # the packaged recipe, by name

# Float32 unit roundoff. Comparisons between programs that add the same terms in another order
# (other devices, processes, batch sizes, fusions) use bounds built from it; see float64_rtol.
U32 = 2.0 ** -24
U64 = 2.0 ** -53


def float64_rtol(num_terms: int, amplification: float = 1e3) -> float:
  """A relative tolerance for two float64 programs that reduce the same terms in other orders.

  Higham's bound for a reordered sum of n terms is gamma_n = n * u64 of the sum of magnitudes;
  `amplification` (default 1e3) allows for the sums feeding further operations (a network's
  layers, a few optimizer steps) and for magnitudes larger than the result. With n <= 1e6 this
  is <= 1e-7, still far below what any wiring error (a lost, doubled or misplaced shard)
  changes."""
  return num_terms * U64 * amplification


def fmnist_data_config(**overrides):
  import ml_collections
  from uat_jax import fashion_mnist
  c = ml_collections.ConfigDict(dict(name="fashion_mnist", data_dir="",
                                     manual_dir=fashion_mnist.DEFAULT_DIR, download=False,
                                     augment="default", validation_size=0))
  c.update(overrides)
  return c


def small_fmnist(num_train: int = 4096, num_test: int = 1000):
  """{"train", "test"}: the first examples of the real Fashion-MNIST IDX files as data.Split,
  read directly (no TFDS): the small real-data fixture for unit tests."""
  from uat_jax import data, fashion_mnist
  out = {}
  for split, n in (("train", num_train), ("test", num_test)):
    images_file, labels_file = fashion_mnist.FILES[split]
    images = fashion_mnist.read_idx(os.path.join(fashion_mnist.DEFAULT_DIR, images_file))[:n]
    labels = fashion_mnist.read_idx(os.path.join(fashion_mnist.DEFAULT_DIR, labels_file))[:n]
    out[split] = data.Split(np.ascontiguousarray(images[..., None]), labels.astype(np.int32))
  return out


def load_config(arg: str):
  """The fashion_mnist recipe with <arg> as the CLI would build it."""
  from uat_jax import config as config_lib
  return config_lib.from_file(FMNIST_CONFIG, arg)


def build_trainer(config, num_steps: int, mesh):
  """(model, init_state, train_step) for Fashion-MNIST, wired as train_and_evaluate wires them;
  `init_state()` gives a fresh state from config.seed."""
  from uat_jax import data, optimizers, train
  spec = data.get_spec("fashion_mnist")
  model = train.build_model(config, spec)
  schedule = optimizers.learning_rate_schedule(config.optimizer, num_steps)
  tx = optimizers.optimizer(config.optimizer, schedule)
  step = train.make_train_step(config, model, spec, schedule, mesh)
  return model, lambda: train.prepare_state(
      step, train.create_train_state(config, model, spec, tx, mesh)), step


def train_variables(config, train_split, num_steps: int, start=None) -> tuple:
  """(model, {"params", "batch_stats"}) after `num_steps` steps of batch 128 of `config`'s
  training on `train_split` (a data.Split), on one device, from config.seed's initialization or
  from the variables `start` (a fresh optimizer state)."""
  import jax
  import jax.numpy as jnp
  from uat_jax import data, sharding
  mesh = sharding.make_mesh(1)
  model, init_state, step = build_trainer(config, num_steps, mesh)
  state = init_state()
  if start is not None:  # copies: the step donates its input state
    start = jax.tree.map(jnp.copy, start)
    state = state.replace(params=start["params"], batch_stats=start["batch_stats"])
  for s in range(num_steps):
    state, _ = step(state, sharding.shard_batch(data.train_batch(train_split, 0, s, 128), mesh))
  return model, {"params": state.params, "batch_stats": state.batch_stats}


def final_state(workdir: str, config):
  """(step, host copy of the newest checkpoint's whole TrainState, optimizer state included)
  of a workdir trained with `config`."""
  import jax
  from uat_jax import checkpoints, data, optimizers, sharding, train
  spec = data.get_spec(config.data.name)
  mesh = sharding.make_mesh(1)
  model = train.build_model(config, spec, for_training=False)
  tx = optimizers.optimizer(config.optimizer,
                           optimizers.learning_rate_schedule(config.optimizer, 1))
  # the layout to restore into (it may differ from the saver's)
  abstract = train.create_train_state(config, model, spec, tx, mesh, abstract=True)
  mngr = checkpoints.manager(workdir, config.max_checkpoints)
  try:
    state, step = checkpoints.restore_readable(mngr, abstract, config)
  finally:
    mngr.close()
  return step, jax.device_get(state)


def state_leaves(state) -> list[np.ndarray]:
  """Parameters, optimizer state, batch statistics, step and key, as numpy arrays."""
  import jax
  return [np.asarray(x) for x in jax.tree.leaves(
      (state.params, state.opt_state, state.batch_stats, state.step, state.key))]


def assert_states_equal(a, b) -> None:
  """Bit-identical: a resumed run against an uninterrupted one (same program, same order)."""
  leaves_a, leaves_b = state_leaves(a), state_leaves(b)
  assert len(leaves_a) == len(leaves_b)
  for x, y in zip(leaves_a, leaves_b):
    assert x.dtype == y.dtype and x.shape == y.shape
    np.testing.assert_array_equal(x, y)


def simulated_devices(n: int) -> str:
  """XLA_FLAGS for n simulated CPU devices. XLA:CPU ends a program when its device threads do
  not all reach a collective (an all-reduce) within 40 s; on 2 CPU cores shared with other work
  the 8 threads of one step can arrive that far apart (seen once: "only 7 of them arrived on
  time"), so that limit is 10 minutes here, as long as run_program's own timeout."""
  return (f"--xla_force_host_platform_device_count={n} "
          "--xla_cpu_collective_call_terminate_timeout_seconds=600 "
          "--xla_cpu_collective_call_warn_stuck_timeout_seconds=120")


def env_without_xla_flags(**extra) -> dict[str, str]:
  """The environment for a child program: the caller's, less XLA_FLAGS (a program that simulates
  devices sets its own), plus `extra`."""
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  env.update(extra)
  return env


def run_program(name: str, *args: str, env: dict | None = None, timeout: int = 600):
  """Runs tests/programs/<name>.py as `python -m tests.programs.<name>` in a fresh interpreter
  (programs that simulate devices or enable float64 must set that before jax loads); fails the
  test with the program's stderr if it fails."""
  proc = subprocess.run([sys.executable, "-m", f"tests.programs.{name}", *args], cwd=REPO,
                        env=env or env_without_xla_flags(), capture_output=True, text=True,
                        timeout=timeout)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return proc


def readme_python_blocks() -> list[str]:
  """The ```python blocks of README.md, in order."""
  with open(os.path.join(REPO, "README.md")) as f:
    text = f.read()
  return [part.split("```", 1)[0] for part in text.split("```python\n")[1:]]


def run_cli(*args: str, timeout: int = 600, env: dict | None = None):
  """`python -m uat_jax.main *args` from the repository root."""
  return subprocess.run([sys.executable, "-m", "uat_jax.main", *args], cwd=REPO,
                        capture_output=True, text=True, timeout=timeout, env=env)


@contextlib.contextmanager
def absl_log():
  """The messages uat_jax logs (through absl) meanwhile, whatever an earlier test in this process
  did to the logging setup (levels, disabled loggers, handlers)."""
  lines = []
  handler = logging.Handler(logging.INFO)
  handler.emit = lambda record: lines.append(record.getMessage())
  logger = logging.getLogger("absl")
  saved = logger.level, logger.disabled
  logger.setLevel(logging.INFO)
  logger.disabled = False
  logger.addHandler(handler)
  try:
    yield lines
  finally:
    logger.removeHandler(handler)
    logger.setLevel(saved[0])
    logger.disabled = saved[1]
