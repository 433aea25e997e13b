"""The module graph: the import-linter layers contract of pyproject.toml holds (no cycles, no
upward imports), and no module uses another module's private names."""

import ast
import os

from importlinter import cli as importlinter_cli

from tests.helpers import REPO


def test_layers_contract_holds():
  # 0 = every contract kept; the report (printed on failure) names the offending import chain.
  assert importlinter_cli.lint_imports(
      config_filename=os.path.join(REPO, "pyproject.toml"), no_cache=True) == 0


def private_uses(source: str, module: str) -> list[str]:
  """`from uat_jax.x import _name` and `x._name` on an imported uat_jax module in `source`."""
  tree = ast.parse(source)
  modules = set()  # local names bound to uat_jax modules
  found = []
  for node in ast.walk(tree):
    if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("uat_jax"):
      for alias in node.names:
        if alias.name.startswith("_"):
          found.append(f"{module}: from {node.module} import {alias.name}")
        elif node.module == "uat_jax" or node.module.startswith("uat_jax."):
          modules.add(alias.asname or alias.name)
    elif isinstance(node, ast.Import):
      for alias in node.names:
        if alias.name.startswith("uat_jax."):
          modules.add(alias.asname or alias.name.split(".")[0])
  for node in ast.walk(tree):
    if (isinstance(node, ast.Attribute) and node.attr.startswith("_")
        and not node.attr.startswith("__") and isinstance(node.value, ast.Name)
        and node.value.id in modules):
      found.append(f"{module}: {node.value.id}.{node.attr}")
  return found


def test_private_name_check_finds_violations():
  src = ("from uat_jax import evaluate\nfrom uat_jax.jacobian import _programs\n"
         "evaluate._resolve(1)\nx = {}._private\n")
  assert private_uses(src, "m") == ["m: from uat_jax.jacobian import _programs",
                                    "m: evaluate._resolve"]


def test_no_module_uses_another_modules_private_names():
  found = []
  for folder, _, names in os.walk(os.path.join(REPO, "uat_jax")):
    for name in names:
      if name.endswith(".py"):
        path = os.path.join(folder, name)
        with open(path) as f:
          found += private_uses(f.read(), os.path.relpath(path, REPO))
  assert not found, found
