"""The config package: recipes load by name without the numerics, evaluator instances survive a
workdir's config.json, and the recipes' facts agree with the datasets'."""

import json
import math
import subprocess
import sys

import pytest

from tests import helpers
from uat_jax import config as config_lib
from uat_jax.errors import UatError


def test_every_recipe_and_study_config_loads_without_jax_flax_or_tensorflow():
  """Config files import ml_collections and the config package only: loading every packaged
  recipe (each method) and study config in a fresh interpreter imports no JAX, Flax or
  TensorFlow."""
  program = """
import sys
from uat_jax import config
for name in config.recipes():
  if name.endswith("_study"):  # the overfit study needs the regime the pilot chose
    config.from_file(name, "P1" if name == "fashion_mnist_overfit_study" else None)
  else:
    for method in config.METHOD_DEFAULTS:
      config.from_file(name, method + ",runlocal")
config.from_file("fashion_mnist_study", "quick")
print(sorted(m for m in ("jax", "flax", "tensorflow", "optax", "orbax") if m in sys.modules))
"""
  out = subprocess.run([sys.executable, "-c", program], cwd=helpers.REPO, capture_output=True,
                       text=True, timeout=120)
  assert out.returncode == 0, out.stderr[-2000:]
  assert out.stdout.strip() == "[]"


def test_recipes_load_by_name_or_path_and_a_wrong_name_is_one_line():
  assert len(config_lib.recipes()) >= 10
  assert config_lib.from_file("cifar10:at,bf16").dtype == "bfloat16"  # the bf16 variant
  assert config_lib.from_file("cifar10:at").dtype == "float32"
  by_name = config_lib.from_file("cifar10:at")
  by_path = config_lib.from_file(config_lib.path_of("cifar10"), "at")
  assert by_name.to_dict() == by_path.to_dict() and by_name.method == "at"
  with pytest.raises(UatError, match="neither a file nor a packaged recipe .*fashion_mnist"):
    config_lib.path_of("imagenet")
  # uat_jax 0.1's paths (configs/NAME.py) name the packaged recipe
  assert config_lib.path_of("configs/fashion_mnist.py") == config_lib.path_of("fashion_mnist")
  with pytest.raises(UatError, match="unknown method 'mixup'"):
    config_lib.from_file("fashion_mnist", "mixup")


def test_evaluator_instances_are_named_and_survive_a_workdirs_config_json(tmp_path):
  """Any number of instances of a type; the default pgd instance logs under eval/, the others
  under their names; a workdir's config.json brings the added instances back."""
  c = config_lib.from_file("fashion_mnist", "at")
  with c.unlocked():
    c.evals.strong = config_lib.evaluator("suite", preset="strong", output="strong")
    c.evals.strong.attacks.pgd200 = {"attack": "pgd", "steps": 200}
  assert sorted(config_lib.evaluators(c)) == ["jacobian", "pgd", "strong", "suite"]
  assert config_lib.scalar_prefix("pgd", "pgd") == "eval"
  assert config_lib.scalar_prefix("val_pgd", "pgd") == "val_pgd"
  (tmp_path / "config.json").write_text(c.to_json_best_effort(indent=2, sort_keys=True))
  back = config_lib.load_workdir_config(str(tmp_path))
  assert back.to_dict() == c.to_dict()
  with pytest.raises(UatError, match="unknown evaluator type 'fid'"):
    config_lib.evaluator("fid")


def test_the_resnet_recipes_hold_the_datasets_train_sizes():
  """The recipes state each dataset's train split size (configs import no dataset code): one
  epoch of PGD validation is the train split less the 1,000 held-out images."""
  from uat_jax import data
  for name, dataset in (("cifar10", "cifar10"), ("cifar100", "cifar100"),
                        ("svhn", "svhn_cropped")):
    c = config_lib.from_file(name, "at")
    assert c.data.name == dataset
    assert c.evals.pgd.every_steps == math.ceil(
        (data.get_spec(dataset).num_train - 1000) / c.batch_size)


def test_a_study_sets_only_fields_the_config_has():
  from uat_jax.study import spec
  s = config_lib.from_file("fashion_mnist_study", "quick")
  with s.unlocked():
    s.overrides.model.width_factor = 2
  with pytest.raises(UatError, match="the study sets overrides .* which names no config field"):
    spec.make_run(s, "at", 0)
  assert json.dumps(s.to_dict())  # the study config itself stays plain data
