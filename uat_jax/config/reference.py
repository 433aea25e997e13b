"""Every config field with its default and meaning, read from the comments beside the fields in
uat_jax/config/base.py: the one source of docs/config_reference.md (docs/make_config_reference.py)
and of the command line's field listings."""

from __future__ import annotations

import inspect
import re
from typing import Any, Iterator

from uat_jax.config import base

ASSIGN = re.compile(r"^\s*(c|e)\.([\w.]+)\s*=\s*(.*?)\s*(?:#\s*(.*))?$")


def _comments(fn, prefix: str) -> dict[str, str]:
  """Field -> the comment on its line in `fn`'s source, or the comment lines just above it."""
  out, above = {}, []
  for line in inspect.getsource(fn).splitlines():
    stripped = line.strip()
    if stripped.startswith("#"):
      above.append(stripped.lstrip("# ").strip())
      continue
    m = ASSIGN.match(line)
    if m and "ConfigDict()" not in m.group(3) and "evaluator(" not in m.group(3):
      out[prefix + m.group(2)] = m.group(4) or " ".join(above)
    above = []
  return out


def comments(config) -> dict[str, str]:
  """The meaning of every field of `config` that base.py documents: its own fields, and each
  evaluator instance's fields (evals.<name>.<field>) from its type's defaults."""
  out = _comments(base.base_config, "")
  for name, e in base.evaluators(config).items():
    out.update(_comments(base.EVALUATOR_TYPES[e.type], f"evals.{name}."))
  return out


def leaves(node, prefix: str = "") -> Iterator[tuple[str, Any]]:
  """(dotted field, value) of every leaf; a suite's `attacks` registry counts as one leaf."""
  for key, value in node.items():
    if hasattr(value, "items") and key != "attacks":
      yield from leaves(value, f"{prefix}{key}.")
    else:
      yield f"{prefix}{key}", value


def rows(config) -> list[list[str]]:
  """[field, default, meaning] of every field of `config`, in field order."""
  notes = comments(config)
  return [[f"`{name}`", f"`{'{}' if hasattr(value, 'items') else repr(value)}`",
           notes.get(name, "").replace("|", "\\|")] for name, value in leaves(config)]
