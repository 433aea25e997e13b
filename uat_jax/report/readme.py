"""The README's verdict block: the claims' headlines between two marker lines, rewritten by
`python -m uat_jax.report --readme=README.md` so that the front page states what the report
does."""

from __future__ import annotations

from typing import Any

from uat_jax import files
from uat_jax.errors import UatError
from uat_jax.report.claims import headline

README_BEGIN = "<!-- verdicts: written by python -m uat_jax.report --readme -->"
README_END = "<!-- /verdicts -->"


def readme_block(claims: list[dict[str, Any]]) -> str:
  """The README's verdict list: each claim's headline (of `claim_rows`) as REPORT.md states it."""
  return "\n".join([README_BEGIN] + [f"- {headline(c)}" for c in claims] + [README_END])


def readme_parts(readme: str) -> tuple[str, str]:
  """README `readme`'s text before and after its verdict block (markers included in the block);
  one line naming the fix if the file or a marker is missing."""
  try:
    with open(readme) as f:
      text = f.read()
  except OSError as e:
    raise UatError(f"cannot read the README {readme} ({e.strerror}): pass an existing file to "
                   "--readme") from None
  start, end = text.find(README_BEGIN), text.find(README_END)
  if start < 0 or end < start:
    raise UatError(f"{readme} has no verdict block: add the lines {README_BEGIN!r} and "
                   f"{README_END!r} where the verdicts go")
  return text[:start], text[end + len(README_END):]


def write_readme(readme: str, block: str) -> None:
  """Replaces the verdict block of README `readme` (between its two markers) by `block`."""
  before, after = readme_parts(readme)
  files.write_atomic(readme, before + block + after)
