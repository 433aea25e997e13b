"""The repository stands alone: nothing it tracks refers to files outside it (a clone has only
what is tracked)."""

import os
import re
import subprocess

import pytest

from tests.helpers import REPO

# A path token that starts with one or more parent steps (two dots and a slash or backslash).
PARENT_PATH = re.compile(r"(?:\.\.[/\\])+[\w.\-/\\]*")


def tracked_text_files():
  try:
    out = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True)
  except (OSError, subprocess.CalledProcessError):
    pytest.skip("not a git checkout: the tracked files are unknown")
  for name in out.stdout.decode().split("\0"):
    path = os.path.join(REPO, name)
    if not name or not os.path.isfile(path):
      continue
    with open(path, "rb") as f:
      raw = f.read()
    if b"\0" in raw[:8192]:  # binary (figures)
      continue
    yield name, raw.decode("utf-8", errors="replace")


def outside_references(name, text):
  """(line number, token) for each parent-relative path in `text` that, resolved from the
  file's folder, leaves the repository or names nothing in it."""
  folder = os.path.dirname(os.path.join(REPO, name))
  found = []
  for lineno, line in enumerate(text.splitlines(), 1):
    for token in PARENT_PATH.findall(line):
      target = os.path.normpath(os.path.join(folder, token.replace("\\", "/")))
      if os.path.relpath(target, REPO).startswith("..") or not os.path.exists(target):
        found.append((lineno, token))
  return found


def test_no_tracked_file_refers_outside_the_repository():
  bad = [f"{name}:{lineno}: {token}" for name, text in tracked_text_files()
         for lineno, token in outside_references(name, text)]
  assert not bad, "tracked files point outside the repository:\n" + "\n".join(bad)


def test_the_check_finds_what_it_looks_for():
  up = ".." + "/"  # spelled in two parts so that this file passes its own check
  shared, outside = f"{up}shared/PAPER.md", f"{up}{up}outside.txt"
  assert outside_references("README.md", f"see {shared}") == [(1, shared)]
  assert outside_references("tests/x.py", f"# {outside}") == [(1, outside)]
  # From tests/ the first is inside the repository, but names nothing there.
  assert outside_references("tests/x.py", f"# {shared}") == [(1, shared)]
  # Inside the repository and existing is fine: uat_jax/../README.md is README.md.
  assert outside_references("uat_jax/x.py", f"# {up}README.md") == []


def test_the_config_reference_is_up_to_date():
  """docs/config_reference.md is what docs/make_config_reference.py writes from the base config
  (rerun the script after changing a field)."""
  import importlib.util
  spec = importlib.util.spec_from_file_location(
      "make_config_reference", os.path.join(REPO, "docs", "make_config_reference.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  with open(module.PAGE) as f:
    assert f.read() == module.render(), "run: .venv/bin/python docs/make_config_reference.py"


def test_the_readme_is_a_front_page():
  size = os.path.getsize(os.path.join(REPO, "README.md"))
  assert size <= 10_500, f"README.md is {size} bytes: move detail into docs/"
