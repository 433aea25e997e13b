"""The one Markdown table helper every report, status line and summary uses."""

from __future__ import annotations

from typing import Any, Sequence


def markdown_table(header: Sequence[Any], rows: Sequence[Sequence[Any]],
                   aligned: bool = False) -> str:
  """A Markdown table: `| h1 | h2 |`, `|---|---|`, then one line per row (cells as str).
  `aligned` pads every column to its widest cell (for terminals)."""
  cells = [[str(c) for c in header]] + [[str(c) for c in row] for row in rows]
  if aligned:
    widths = [max(len(r[i]) for r in cells) for i in range(len(cells[0]))]
    cells = [[c.ljust(w) for c, w in zip(r, widths)] for r in cells]
    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
  else:
    rule = "|" + "---|" * len(cells[0])
  lines = ["| " + " | ".join(r) + " |" for r in cells]
  return "\n".join([lines[0], rule] + lines[1:])
