"""Training: config validation, schedules, 1 vs 8 devices, bfloat16. (That AT and EntM do their
job on real data: tests/test_study.py.)"""

import math
import os

import jax
import numpy as np
import pytest

from tests import helpers
from tests.helpers import build_trainer, load_config
from uat_jax import data, estimate, optimizers, sharding, train, validation
from uat_jax import config as config_lib
from uat_jax.errors import UatError


@pytest.mark.parametrize("field,value,message", [
    ("attack.eps", -0.1, "outside \\[0, 1\\]"),
    ("attack.eps", 1.5, "outside \\[0, 1\\]"),
    ("regularizer.alpha", 1.0, "alpha=1.0 must be in \\[0, 1\\)"),
    ("regularizer.alpha", -0.1, "must be in \\[0, 1\\)"),
    ("regularizer.beta", -1.0, "beta=-1.0 must be >= 0"),
    ("attack.steps", 0, "attack.steps=0 must be >= 1"),
    ("batch_size", 100, "not|multiple"),
    ("method", "mixup", "unknown method"),
    ("model.name", "vgg", "unknown model"),
    ("data.name", "imagenet", "unknown dataset"),
    ("attack.bn_mode", "frozen", "bn_mode"),
    ("optimizer.name", "lamb", "unknown optimizer"),
    ("optimizer.weight_average", 1.0, "weight_average=1.0 must be in \\[0, 1\\)"),
])
def test_invalid_values_fail_with_a_clear_message(field, value, message):
  c = load_config("at_entm,runlocal")
  section, _, name = field.rpartition(".")
  (c[section] if section else c)[name] = value
  with pytest.raises(UatError, match=message):
    validation.validate(c, num_devices=8 if field == "batch_size" else 1)


def test_unknown_fields_are_rejected_and_variants_checked():
  c = load_config("at")
  with pytest.raises(AttributeError):
    c.attack.epsilon = 0.1  # locked: no new fields
  with pytest.raises(UatError, match="unknown config variant"):
    load_config("at,fast")
  assert load_config("ls").regularizer.alpha == config_lib.METHOD_DEFAULTS["ls"]["alpha"]


def test_piecewise_schedule():
  c = load_config("at").optimizer
  c.schedule, c.learning_rate, c.boundaries, c.decay_factor = "piecewise", 0.1, (0.5, 0.75), 0.1
  s = optimizers.learning_rate_schedule(c, 100)
  np.testing.assert_allclose([s(0), s(49), s(50), s(74), s(75), s(99)],
                             [0.1, 0.1, 0.01, 0.01, 0.001, 0.001], rtol=1e-5)


def test_weight_averaging_keeps_the_average_and_loading_uses_it(tmp_path, small_fmnist):
  """optimizer.weight_average keeps average <- d * average + (1 - d) * new after every update,
  of the parameters (in the optimizer state) and of the batch-norm statistics (against that
  recursion in float64 over 4 real steps of a WRN-10-1); both the evaluations during training
  and the classifier loaded from the workdir use the averages; resuming without averaging is
  refused in one line that keeps the checkpoints.

  Tolerance: each float32 update of an average rounds once or twice relative to the largest
  magnitude involved, so 4 steps stay within 4 * 2 * 2^-24 of it; 4x that margin."""
  import uat_jax
  c = load_config("standard,runlocal")
  c.model.name, c.model.depth, c.model.width = "wide_resnet", 10, 1  # with batch norm
  c.batch_size = 16  # a small batch keeps the compile and the steps cheap
  c.optimizer.weight_average = 0.5  # large enough that the average is far from the parameters
  _, init_state, step = build_trainer(c, 4, sharding.make_mesh(1))
  state = init_state()
  wide = lambda tree: jax.tree.map(lambda v: np.asarray(v, np.float64), tree)  # noqa: E731
  expected = wide({"params": state.params, "batch_stats": state.batch_stats})
  for s in range(4):
    state, _ = step(state, data.train_batch(small_fmnist["train"], 0, s, 16))
    expected = jax.tree.map(lambda a, v: 0.5 * a + 0.5 * v, expected,
                            wide({"params": state.params, "batch_stats": state.batch_stats}))
  averaged = train.inference_variables(state)
  assert jax.tree.leaves(averaged["batch_stats"])  # the model has statistics to average
  for a, e in zip(jax.tree.leaves(averaged), jax.tree.leaves(expected)):
    np.testing.assert_allclose(a, e, rtol=0, atol=32 * helpers.U32 * np.abs(e).max())

  x = small_fmnist["test"].images[:8].astype(np.float32) / 255
  seen = []

  class Record:  # an evaluator: what evaluations during training see
    name, every_steps = "record", 4

    def run(self, logits_fn, step, mesh):
      seen.append(np.asarray(logits_fn(x)))
      return {}

  c.num_train_steps = 4
  train.train_and_evaluate(c, str(tmp_path / "w"), evaluators=[Record()])
  _, final = helpers.final_state(str(tmp_path / "w"), c)
  model = train.build_model(c, data.get_spec("fashion_mnist"), for_training=False)
  logits = lambda v: np.asarray(model.apply(v, x, train=False))  # noqa: E731
  loaded = np.asarray(uat_jax.load(str(tmp_path / "w"))(x))
  np.testing.assert_allclose(loaded, logits(train.inference_variables(final)), rtol=1e-5,
                             atol=1e-5 * np.abs(loaded).max())
  np.testing.assert_allclose(seen[-1], loaded, rtol=1e-5, atol=1e-5 * np.abs(loaded).max())
  raw = logits({"params": final.params, "batch_stats": final.batch_stats})
  assert not np.allclose(loaded, raw, rtol=1e-3, atol=1e-3)
  # Resuming with the averaging switched off is one line naming the setting; nothing is moved.
  kept = sorted(os.listdir(tmp_path / "w" / "checkpoints"))
  c.optimizer.weight_average, c.num_train_steps = 0.0, 6
  with pytest.raises(UatError, match="weight_average\\) differs from the run's"):
    train.train_and_evaluate(c, str(tmp_path / "w"), evaluators=[])
  assert sorted(os.listdir(tmp_path / "w" / "checkpoints")) == kept


def test_train_step_is_deterministic_in_state_and_batch(small_fmnist):
  c = load_config("at_ls,runlocal")
  c.batch_size, c.attack.steps = 32, 3
  mesh = sharding.make_mesh(1)
  _, init_state, step = build_trainer(c, 10, mesh)
  batch = data.train_batch(small_fmnist["train"], 0, 0, 32)
  outs = []
  for _ in range(2):
    new_state, metrics = step(init_state(), sharding.shard_batch(batch, mesh))
    outs.append(jax.device_get((new_state.params, metrics)))
  jax.tree.map(np.testing.assert_array_equal, outs[0], outs[1])
  assert set(outs[0][1]) >= {"loss", "ce", "entropy", "accuracy_clean", "accuracy_adv",
                             "grad_norm", "learning_rate"}


@pytest.mark.slow
def test_one_step_on_8_devices_equals_1_device_and_pmap_equals_jit():
  proc = helpers.run_program("multi_device")  # tests/programs/multi_device.py
  assert "wide_resnet 1 vs 8 devices: same update" in proc.stdout
  assert "wide_resnet jit vs pmap on 8 devices: same update" in proc.stdout


@pytest.mark.slow
def test_every_config_trains_and_evaluates_a_step_on_8_devices():
  """Each shipped training config (model, input shape, classes, augmentation, attack,
  optimizer) runs one training step and one PGD evaluation step on 8 simulated devices (SVHN's
  and CIFAR-100's, the CIFAR-10 program but for constants, flips or the last layer's size, and
  MNIST's, the Fashion-MNIST program but for constants, are lowered there instead)."""
  proc = helpers.run_program("every_config")  # tests/programs/every_config.py
  for name in ("cifar10", "cifar100", "fashion_mnist", "mnist", "svhn"):
    assert f"{name}: " in proc.stdout and "on 8 devices" in proc.stdout, proc.stdout


def test_bfloat16_compute_keeps_float32_parameters_and_a_close_loss(small_fmnist):
  batch = data.train_batch(small_fmnist["train"], 0, 0, 32)
  mesh = sharding.make_mesh(1)
  out = {}
  for dtype in ("float32", "bfloat16"):
    c = load_config("at_entm,runlocal")
    c.batch_size, c.attack.steps, c.attack.random_start, c.dtype = 32, 2, False, dtype
    model, init_state, step = build_trainer(c, 10, mesh)
    state, metrics = step(init_state(), sharding.shard_batch(batch, mesh))
    assert all(leaf.dtype == np.float32 for leaf in jax.tree.leaves(state.params))
    assert model.dtype == (jax.numpy.bfloat16 if dtype == "bfloat16" else jax.numpy.float32)
    out[dtype] = float(metrics["loss"])
  assert np.isfinite(out["bfloat16"])
  # bfloat16 keeps 8 significant bits (unit roundoff 2^-9 = 0.2%); the loss passes through 4
  # layers whose products and sums each round to it, and 2 attack steps: 5% is 25 roundoffs.
  assert abs(out["bfloat16"] - out["float32"]) < 0.05 * abs(out["float32"]), out
  # Evaluation and attacks always get a float32 model.
  c.dtype = "bfloat16"
  assert train.build_model(c, data.get_spec("fashion_mnist"), for_training=False).dtype == \
      jax.numpy.float32
  c.dtype = "float16"
  with pytest.raises(UatError, match="unknown dtype"):
    validation.validate(c)
  c.dtype = "float64"  # numerical checks only: needs 64-bit JAX, which the suite leaves off
  with pytest.raises(UatError, match="JAX_ENABLE_X64=1"):
    validation.validate(c)


def test_a_run_leaves_no_open_file_or_thread_behind(tmp_path):
  """Two trainings in one process (as the study runs them): the second leaves exactly the
  threads the first left (nothing accumulates), and neither keeps a file of its workdir open
  (checkpoint manager and metric writers closed), also when training fails."""
  import threading
  from uat_jax import evaluators

  def open_files_under(path):
    found = []
    for fd in os.listdir("/proc/self/fd"):
      try:
        target = os.readlink(f"/proc/self/fd/{fd}")
      except OSError:
        continue
      if target.startswith(str(path)):
        found.append(target)
    return found

  c = load_config("standard,runlocal")
  c.num_train_steps = 4
  c.checkpoint_every_steps = 2
  c.evals.pgd.every_steps = 4
  c.evals.pgd.num_examples = 50
  c.evals.pgd.steps = 1
  train.train_and_evaluate(c, str(tmp_path / "a"), evaluators=evaluators.for_training(c))
  threads = {t.ident for t in threading.enumerate()}
  assert open_files_under(tmp_path) == []
  train.train_and_evaluate(c, str(tmp_path / "b"), evaluators=evaluators.for_training(c))
  # Threads Python only registers (native threads of XLA or torch that happened to run Python
  # code, e.g. a callback or a finalizer of an earlier test's objects) are not uat_jax's; a
  # thread that has finished its work (a helper pool, tqdm's monitor, which checks every 10 s)
  # gets 15 s to return; one that outlives that has leaked.
  extra = [t for t in threading.enumerate() if t.ident not in threads
           and type(t).__name__ != "_DummyThread"]
  for t in extra:
    t.join(timeout=15)
  assert [t.name for t in extra if t.is_alive()] == []
  assert open_files_under(tmp_path) == []

  class Failing:
    name, every_steps = "failing", 2

    def run(self, logits_fn, step, mesh):
      raise RuntimeError("evaluator failed")

  with pytest.raises(RuntimeError, match="evaluator failed"):
    train.train_and_evaluate(c, str(tmp_path / "c"), evaluators=[Failing()])
  assert open_files_under(tmp_path) == []


def test_every_shipped_config_validates_on_common_device_counts():
  """Every config x method x variant validates on 1, 2, 4, 8 and 16 devices (evaluation batch
  sizes round up to the device count); on 6, the training batch of 128 does not divide and the
  one line proposes the nearest valid sizes."""
  from uat_jax import validation
  from uat_jax import config as config_lib
  from uat_jax.errors import UatError
  methods = ("standard", "entm", "ls", "at", "at_entm", "at_ls")
  paths = [p for p in config_lib.recipes() if not p.endswith("_study")]
  assert len(paths) >= 5
  for path in paths:
    for method in methods:
      for variant in ("", ",runlocal"):
        c = config_lib.from_file(path, method + variant)
        for n in (1, 2, 4, 8, 16):
          validation.validate(c, n)
        if c.batch_size % 6:
          with pytest.raises(UatError, match=r"multiple of the 6 devices: use 126 or 132 "
                                             r"\(--config.batch_size=132\)"):
            validation.validate(c, 6)


def test_the_estimate_counts_steps_from_the_dataset_size_and_hours_from_the_measured_rate():
  """estimate.estimate (--dry_run): steps from the recipe and the dataset's size without reading
  data, hours = steps x batch / the measured images/s (uat_jax.throughput)."""
  c = helpers.load_config("at")  # 20 epochs of the 60,000 Fashion-MNIST training images
  row = {"device": "dev", "step": "at", "model": c.model.name, "image": [28, 28, 1],
         "dtype": "float32", "batch": 128, "attack_steps": c.attack.steps,
         "images_per_s": 1000.0, "gflop_per_image": 1e12 / 128 / 1e9}
  e = estimate.estimate(c, flops=1e12, rows_of_tables=[[row]])
  assert e["steps"] == math.ceil(20 * 60000 / 128) and e["basis"] == "measured"
  assert e["hours"] == pytest.approx(e["steps"] * 128 / 1000 / 3600)
  with c.unlocked():
    c.dtype = "bfloat16"  # no row of that dtype on that device: not estimated, and said so
  e = estimate.estimate(c, flops=1e12, rows_of_tables=[[row]])
  assert e["hours"] is None and "uat-jax bench" in estimate.summary(c, e)
  with c.unlocked():
    c.data.validation_size, c.num_train_steps = 5000, -1
  assert estimate.estimate(c, flops=1e12)["steps"] == math.ceil(20 * 55000 / 128)
