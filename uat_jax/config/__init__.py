"""Configs as data: the base config, the evaluator instances, the packaged recipes
(fashion_mnist, mnist, cifar10, cifar100, svhn and their *_study grids) and their loading.

Imports ml_collections only (no JAX, Flax or TensorFlow), so recipes can be read, listed and
packaged without the numerics; uat_jax.validation checks values where a command starts.

  from uat_jax import config
  c = config.from_file("fashion_mnist", "at_entm,runlocal")
"""

from uat_jax.config.base import (EVALUATOR_TYPES, METHOD_DEFAULTS, OPTIMIZERS, SCHEDULES,
                                 VARIANTS, base_config, build, early_stopping, evaluator,
                                 evaluators, names, parse_arg, resnet_at_recipe, runlocal,
                                 scalar_prefix)
from uat_jax.config.loading import (WORKDIR_CONFIG, describe, from_file, load_workdir_config,
                                    path_of, recipes, split_spec)

__all__ = ["EVALUATOR_TYPES", "METHOD_DEFAULTS", "OPTIMIZERS", "SCHEDULES", "VARIANTS",
           "WORKDIR_CONFIG", "base_config", "build", "describe", "early_stopping", "evaluator",
           "evaluators", "from_file", "load_workdir_config", "names", "parse_arg", "path_of",
           "recipes", "resnet_at_recipe", "runlocal", "scalar_prefix", "split_spec"]
