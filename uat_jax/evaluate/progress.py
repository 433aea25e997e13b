"""One progress bar and ETA for a whole suite: every (attack, eps) piece still to run, its
points (all of them, or under only_robust those still robust, an upper bound), times each
attack's cost per point, measured on its own batches (the first batch, which includes the
compilation, until a second one is timed); an attack not yet timed is counted at the timed
ones' mean cost per gradient pass times its own gradient passes per point (presets.passes:
SPSA-100 costs about 85 times PGD-100). Shown with tqdm on stderr (in a notebook too), every
batch on a terminal and every 30 s in a log; off with run_suite(..., progress=False) or
UAT_JAX_PROGRESS=0."""

from __future__ import annotations

import os
import sys
from typing import Callable, Optional

from tqdm.auto import tqdm

LOG_INTERVAL_S = 30.0  # how often a bar redraws when stderr is not a terminal (logs)


def enabled(progress: Optional[bool]) -> bool:
  """run_suite's `progress` argument, or the UAT_JAX_PROGRESS environment variable (default on)."""
  if progress is not None:
    return bool(progress)
  return os.environ.get("UAT_JAX_PROGRESS", "1").strip().lower() not in ("0", "false", "no", "")


class SuiteProgress:
  """The suite's progress over `pieces` [(attack name, eps)] of up to `n` points each;
  `points_for(eps)`: how many points a piece at eps not yet started will attack (at most);
  `passes[name]`: an attack's gradient passes per point (default 1 each)."""

  def __init__(self, pieces: list[tuple[str, float]], n: int, show: bool,
               points_for: Callable[[float], int], passes: Optional[dict[str, float]] = None):
    self.pending = list(pieces)
    self.passes = passes or {}
    self.n, self.points_for, self.current = n, points_for, ""
    # The counts the ETA needs, kept here: a disabled tqdm bar counts nothing.
    self.total, self.done, self.piece_end = len(pieces) * n, 0, 0
    self.cost: dict[str, tuple[float, int, int]] = {}  # name -> (seconds, points, batches)
    interactive = hasattr(sys.stderr, "isatty") and sys.stderr.isatty()
    self.bar = tqdm(total=len(pieces) * n, unit="pt", desc="attack suite", disable=not show,
                    mininterval=0.5 if interactive else LOG_INTERVAL_S, leave=False,
                    bar_format="{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} points "
                               "[{elapsed}{postfix}]")

  def start(self, name: str, eps: float, points: int) -> None:
    """Piece (name, eps) starts on `points` points: the total drops by those it skips."""
    self.pending.remove((name, eps))
    self.total -= self.n - points
    self.bar.total = self.total
    self.current = name
    self.piece_end = self.done + points  # where the count stands once this piece is done

  def batch(self, points: int, seconds: float) -> None:
    spent, counted, batches = self.cost.get(self.current, (0.0, 0, 0))
    if batches == 1:  # the first batch held the compilation: time from the second on
      spent, counted = 0.0, 0
    self.cost[self.current] = (spent + seconds, counted + points, batches + 1)
    self.advance(points)
    self.bar.set_postfix_str(f"{self.current}; ETA {self.eta_text()}", refresh=False)

  def finish(self) -> None:
    """The current piece is done (computed, or loaded from a store): its points count."""
    self.advance(self.piece_end - self.done)

  def advance(self, points: int) -> None:
    self.done += points
    self.bar.update(points)

  def per_point(self, name: str) -> Optional[float]:
    if name in self.cost:
      spent, counted, _ = self.cost[name]
      return spent / max(counted, 1)
    known = [self.per_point(k) / self.passes.get(k, 1.0) for k in self.cost]
    return sum(known) / len(known) * self.passes.get(name, 1.0) if known else None

  def eta(self) -> Optional[float]:
    """Seconds left: the current piece's rest and every pending piece."""
    left = self.total - self.done - self.n * len(self.pending)
    cost = self.per_point(self.current)
    if cost is None:
      return None
    total = max(left, 0) * cost
    for name, eps in self.pending:
      c = self.per_point(name)
      total += self.points_for(eps) * (c if c is not None else cost)
    return total

  def eta_text(self) -> str:
    seconds = self.eta()
    if seconds is None:
      return "not yet timed"
    untimed = {name for name, _ in self.pending} - set(self.cost)
    return (f"~{seconds:.0f}s" + (f" ({len(untimed)} attack{'s' if len(untimed) > 1 else ''} "
                                  "estimated from the others)" if untimed else ""))

  def close(self) -> None:
    self.bar.close()
