"""Whether the worst case has converged (docs/study_plan.md, v3.3): on the checked runs (the
study outputs marked `worst_case` False, e.g. `adaptive` on the best checkpoints of the
adversarially trained methods, seeds 0-1), how much adding that last family of attacks lowers
the worst-case robust accuracy of `paper` + `strong`; converged if at most TOLERANCE on every
checked run and eps."""

from __future__ import annotations

from typing import Any

from uat_jax.report.formatting import pts
from uat_jax.report.view import NAMES, Results

TOLERANCE = 0.005  # 0.5 points: 10 of 2,000 test images


def check(r: Results) -> dict[str, Any]:
  """{"rows": [(method, seed, eps, worst before, worst with the check, drop)], "pending": n,
  "label": converged | not converged | pending | not planned}."""
  rows, pending = [], 0
  for m in r.methods:
    for run in r.final[m]:
      for output in r.planned(run, None, checks=True):
        for eps in r.eps_of(output, m):
          before = r.mask(run, "worst", eps)
          check_mask = r.mask(run, "worst", eps, outputs=[output])
          if before is None or check_mask is None:
            pending += 1
            continue
          after = before & check_mask
          rows.append((m, run["seed"], eps, before.mean(), after.mean(),
                       before.mean() - after.mean()))
  if not rows and not pending:
    return {"rows": rows, "pending": 0, "label": "not planned"}
  if any(row[-1] > TOLERANCE for row in rows):
    label = "not converged"
  else:
    label = "pending" if pending else "converged"
  return {"rows": rows, "pending": pending, "label": label}


def qualifier(c: dict[str, Any]) -> str:
  """What claims 1 and 5 carry while the worst case is not shown to have converged."""
  if c["label"] == "not converged":
    return " (worst case not converged: the stronger evaluation is to run)"
  if c["label"] == "pending":
    return " (worst case's convergence check pending)"
  return ""


def text(c: dict[str, Any]) -> str:
  tol = f"{100 * TOLERANCE:.1f}"
  if c["label"] == "not planned":
    return "The study plans no convergence check of its worst case."
  head = (f"Convergence of the worst case (plan v3.3: adding the last attack family lowers "
          f"robust accuracy by at most {tol} points on every checked run and eps): "
          f"{c['label']}")
  if c["pending"]:
    head += f" ({len(c['rows'])} checked, {c['pending']} pending)"
  if c["rows"]:
    worst = max(c["rows"], key=lambda row: row[-1])
    head += (f"; the largest change {pts(0.0 - worst[-1], 2)} points, {NAMES[worst[0]]} seed "
             f"{worst[1]} at eps {worst[2]:g}")
  return head + "."


def table_rows(c: dict[str, Any]) -> list[list[str]]:
  """Two decimals: a change of one image in 2,000 (0.05 points) shows as it is."""
  return [[NAMES[m], str(seed), f"{eps:g}", f"{100 * b:.2f}", f"{100 * a:.2f}", pts(0.0 - d, 2)]
          for m, seed, eps, b, a, d in c["rows"]]
