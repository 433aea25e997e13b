"""Finding and loading configs: the recipes packaged in uat_jax/config by name
(`fashion_mnist:at_entm,runlocal`), a user's config file by path (`my_config.py:arg`), and the
config a workdir was trained with (its config.json). Imports ml_collections only."""

from __future__ import annotations

import ast
import importlib.util
import json
import os

import ml_collections

from uat_jax.config import base
from uat_jax.errors import UatError

PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))
# The config file of `--config` for a workdir: the config it was trained with.
WORKDIR_CONFIG = os.path.join(PACKAGE_DIR, "workdir.py")
# Modules of this package that are not recipes.
_NOT_RECIPES = ("__init__", "base", "loading", "accelerator_study", "workdir", "reference",
                "fashion_mnist_regimes")


def recipes() -> list[str]:
  """The names of the packaged recipes and study configs, e.g. fashion_mnist, cifar10_study."""
  return sorted(n[:-3] for n in os.listdir(PACKAGE_DIR)
                if n.endswith(".py") and n[:-3] not in _NOT_RECIPES)


def path_of(spec: str) -> str:
  """The file of a config: a packaged recipe's name (`cifar10`, or `configs/cifar10.py` as
  uat_jax 0.1 named it), or a path to a file of one's own (`my_x`). One line naming the choices
  when neither exists."""
  if os.path.exists(spec):
    return spec
  if spec in recipes():
    return os.path.join(PACKAGE_DIR, spec + ".py")
  legacy = os.path.basename(spec)[:-3] if spec.startswith("configs/") else None
  if legacy in recipes():  # configs/NAME.py of uat_jax 0.1: the recipes live in the package now
    return os.path.join(PACKAGE_DIR, legacy + ".py")
  raise UatError(f"config {spec!r} is neither a file nor a packaged recipe "
                 f"({', '.join(recipes())})")


def describe(spec: str) -> str:
  """A config file's docstring (what the recipe reproduces), read without running it."""
  with open(path_of(spec)) as f:
    return ast.get_docstring(ast.parse(f.read())) or ""


def split_spec(spec: str) -> tuple[str, str | None]:
  """"name:arg" or "path.py:arg" -> (file, arg); the arg is None without a colon."""
  name, sep, arg = spec.partition(":")
  return path_of(name), (arg if sep else None)


def from_file(spec: str, arg: str | None = None) -> ml_collections.ConfigDict:
  """get_config(arg) of a config file or packaged recipe, as `--config=spec:arg` builds it
  (`spec` may carry the arg itself: "fashion_mnist:at_entm")."""
  path, inline = split_spec(spec)
  spec_obj = importlib.util.spec_from_file_location(
      "uat_config_" + os.path.splitext(os.path.basename(path))[0], path)
  module = importlib.util.module_from_spec(spec_obj)
  spec_obj.loader.exec_module(module)
  return module.get_config(inline if arg is None else arg)


def load_workdir_config(workdir: str) -> ml_collections.ConfigDict:
  """The config a workdir was trained with (its config.json) over today's defaults, locked.
  Fields added since the run keep their defaults; fields the code no longer has are an error."""
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    raise UatError(f"no config.json in {workdir}: is it a uat_jax workdir? Pass the training "
                   "config with --config, or another --workdir")
  try:
    with open(path) as f:
      saved = json.load(f)
  except (OSError, ValueError) as e:
    raise UatError(f"cannot read {path} ({e}): pass the training config with --config") from e
  c = base.base_config()

  def merge(node, values, prefix):
    for k, v in values.items():
      if k not in node and prefix == "evals." and isinstance(v, dict) and "type" in v:
        with node.unlocked():  # an evaluator instance the run's config file added
          node[k] = base.evaluator(v["type"])
      if k not in node:
        raise UatError(f"{path} has field {prefix}{k}, unknown to this version: pass the "
                       "training config with --config")
      if isinstance(node[k], ml_collections.ConfigDict) and isinstance(v, dict):
        if k == "attacks" and node.get("type") == "suite":  # a registry of free-form entries
          for name, entry in v.items():
            node[k][name] = ml_collections.ConfigDict(entry)
        else:
          merge(node[k], v, f"{prefix}{k}.")
      else:
        node[k] = tuple(v) if isinstance(v, list) else v

  merge(c, saved, "")
  c.lock()
  return c
