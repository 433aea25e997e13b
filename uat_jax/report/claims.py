"""The verdict rules of the pre-registered plan (docs/study_plan.md, "Outcomes and tests"): one
function per claim of the paper, each returning {"claim", "label", "text"}; the labels come
from uat_jax.stats."""

from __future__ import annotations

import math
from typing import Any, Optional

import numpy as np

from uat_jax import stats
from uat_jax.report.formatting import ci, p_values
from uat_jax.report.view import JACOBIAN_PRIMARY, NAMES, PENDING, WEAK, Results

MARGIN = 0.01  # the plan's Delta: 1.0 point


def robust_overfitting(r: Results) -> dict[str, Any]:
  """Last minus best validation PGD accuracy over the baseline's seeds (the plan: it occurred
  if the mean is below -1 point and its seed-bootstrap interval lies below 0)."""
  base = r.study["baseline"]
  drops = [bl[1] - bl[0] for bl in (r.best_and_last(x) for x in r.final[base]) if bl]
  if len(drops) < len(r.final[base]):  # the rule is over every seed: none is applied before
    return {"label": PENDING, "trained": len(drops), "seeds": len(r.final[base])}
  i = stats.seed_mean(drops)
  occurred = i.estimate < -MARGIN and i.high < 0
  gaps = [g for g in (r.train_gap(x) for x in r.final[base]) if g is not None]
  return {"interval": i, "drops": drops, "occurred": occurred,
          "gap": stats.seed_mean(gaps) if gaps else None,
          "label": "occurred" if occurred else "did not occur (by the plan's rule)"}


def overfitting_text(ro: dict[str, Any]) -> str:
  """What the final AT runs say about robust overfitting, and what that means for claim 1."""
  if "interval" not in ro:
    return (f"Robust overfitting: pending ({ro['trained']} of the {ro['seeds']} AT seeds "
            "trained).")
  text = ("Robust overfitting in the final AT runs (last minus best validation PGD-20 "
          f"accuracy): {ci(ro['interval'])} points, {ro['label']}")
  if ro["gap"] is not None:
    text += (f"; train minus validation robust accuracy at the end: {ci(ro['gap'])} points")
  if not ro["occurred"]:
    text += (". AT's validation robust accuracy fell by less than the plan's 1 point after its "
             "peak, so claim 1 is tested where there is little robust overfitting for a "
             "regularizer to remove: a null result here does not rule out gains where AT "
             "overfits strongly (longer training, larger models, CIFAR-10)")
  return text + "."


def claim_rows(r: Results) -> list[dict[str, Any]]:
  """One entry per claim: {"claim", "label", "text"}."""
  base, std = r.study["baseline"], r.study["standard_baseline"]
  out = []

  # 1. AT+EntM / AT+LS vs AT, worst case at the large eps (primary: best checkpoint).
  parts, labels = [], []
  for m in r.present("at_entm", "at_ls"):
    for checkpoint, eps, primary in (("best", r.large, True), ("last", r.large, False),
                                     ("best", r.train_eps, False)):
      d = r.paired(r.final[m], r.final[base], "worst", eps, checkpoint)
      if d is None:
        parts.append(f"{NAMES[m]} - AT, {checkpoint} checkpoint, eps {eps:g}: {PENDING}")
        if primary:
          labels.append(f"{NAMES[m]}: pending")
        continue
      label = stats.gain_label(d["interval"], MARGIN)
      weak = r.paired(r.final[m], r.final[base], WEAK, eps, checkpoint)
      parts.append(f"{NAMES[m]} - AT, {checkpoint} checkpoint, eps {eps:g}: {ci(d['interval'])} "
                   f"points, {label}{' (primary)' if primary else ''}; PGD-20 alone "
                   f"{ci(weak['interval']) if weak else 'pending'}; McNemar p per seed "
                   f"{p_values(d['mcnemar'])}")
      if primary:
        labels.append(f"{NAMES[m]}: {label}")
  ro_text = overfitting_text(robust_overfitting(r))
  large = ("twice the training eps" if math.isclose(r.large, 2 * r.train_eps)
           else f"the large eps {r.large:g}")
  out.append({"claim": f"1. AT+EntM and AT+LS beat AT at {large} (worst case)",
              "label": "; ".join(labels), "text": "; ".join(parts) + ". " + ro_text})

  # 2. Clean accuracy kept or improved.
  parts, labels = [], []
  for m in r.present("at_entm", "at_ls"):
    d = r.paired(r.final[m], r.final[base], "clean", None)
    if d is None:
      parts.append(f"{NAMES[m]}: {PENDING}")
      labels.append(f"{NAMES[m]}: pending")
      continue
    label = stats.gain_label(d["interval"], MARGIN)
    parts.append(f"{NAMES[m]} - AT clean accuracy: {ci(d['interval'])} points, {label}")
    labels.append(f"{NAMES[m]}: {label}")
  out.append({"claim": "2. AT+EntM and AT+LS keep or improve AT's clean accuracy",
              "label": "; ".join(labels),
              "text": "; ".join(parts) + ". \"No gain, within margin\" is consistent with "
                      "keeping it."})

  # 3. The Jacobian, primary measure probs/fro; controls beside it.
  out.append(jacobian_claim(r))

  # 4. EntM and LS alone vs standard at the smallest eps.
  small = min(r.grid)
  parts, labels = [], []
  for m in r.present("entm", "ls"):
    weak = r.paired(r.final[m], r.final[std], WEAK, small)
    worst = r.paired(r.final[m], r.final[std], "worst", small)
    if weak is None or worst is None:
      parts.append(f"{NAMES[m]}: {PENDING}")
      labels.append(f"{NAMES[m]}: pending")
      continue
    if weak["interval"].low <= 0:
      label = stats.INCONCLUSIVE + " (precondition not met: no PGD-20 gain)"
    elif worst["interval"].high < MARGIN:
      label = "reproduced (gains vanish)"
    elif worst["interval"].low > MARGIN:
      label = "not reproduced (gains persist)"
    else:
      label = stats.INCONCLUSIVE
    parts.append(f"{NAMES[m]} - standard at eps {small:g}: PGD-20 {ci(weak['interval'])}, worst "
                 f"case {ci(worst['interval'])} points: {label}")
    labels.append(f"{NAMES[m]}: {label}")
  out.append({"claim": "4. EntM and LS alone: small-eps gains under PGD-20 vanish under strong "
                       "attacks", "label": "; ".join(labels), "text": "; ".join(parts) + "."})

  # 5. Weak attacks overestimate the uncertainty-promoting models.
  parts, with_gain, pending = [], [], False
  for m, b in (("entm", std), ("ls", std), ("at_entm", base), ("at_ls", base)):
    if m not in r.present(m):
      continue
    for eps in (r.train_eps, r.large):
      weak = r.paired(r.final[m], r.final[b], WEAK, eps)
      over = overestimate(r, r.final[m], r.final[b], eps)
      if weak is None or over is None:
        pending = True
        continue
      if weak["interval"].low > 0:
        with_gain.append(over)
      parts.append(f"{NAMES[m]} at eps {eps:g}: PGD-20 gain {ci(weak['interval'])}, "
                   f"overestimate {ci(over)}")
  if pending and not parts:
    label, pending, parts = "pending", False, [PENDING]
  elif not with_gain:
    label = stats.INCONCLUSIVE + " (precondition not met: no PGD-20 gain to vanish)"
  elif any(o.low > MARGIN for o in with_gain):
    label = "reproduced"
  elif all(o.high < MARGIN for o in with_gain):
    label = "not reproduced"
  else:
    label = stats.INCONCLUSIVE
  out.append({"claim": "5. Weak attacks overestimate uncertainty-promoting models", "label":
              label + (" (some results pending)" if pending and parts else ""),
              "text": "; ".join(parts) + ". Overestimate = gain under PGD-20 minus gain in the "
                      "worst case (points)."})
  return out


def overestimate(r: Results, m_runs, b_runs, eps) -> Optional[stats.Interval]:
  """Gain under PGD-20 minus gain in the worst case, paired by seed: per image, M's (PGD-20
  robust and not worst-case robust) minus B's, each in {0, 1}."""
  seeds = sorted({x["seed"] for x in m_runs} & {x["seed"] for x in b_runs})
  parts = []
  for runs in (m_runs, b_runs):
    runs = [x for x in runs if x["seed"] in seeds]
    weak, worst = r.masks(runs, WEAK, eps), r.masks(runs, "worst", eps)
    if weak is None or worst is None:
      return None
    parts.append((weak & (1 - worst)).astype(np.uint8))
  return stats.paired_difference(*parts)


def jacobian_claim(r: Results) -> dict[str, Any]:
  base = r.study["baseline"]
  claim = "3. EntM shrinks the input-Jacobian norm relative to AT (paper: about 10x)"
  seeds = sorted({x["seed"] for x in r.final[base]} & {x["seed"] for x in r.final["at_entm"]})
  at = [x for x in r.final[base] if x["seed"] in seeds]
  entm = [x for x in r.final["at_entm"] if x["seed"] in seeds]
  b, m = Results.norms(at, JACOBIAN_PRIMARY), Results.norms(entm, JACOBIAN_PRIMARY)
  if b is None or m is None:
    return {"claim": claim, "label": "pending", "text": PENDING + "."}
  ratio = stats.log_ratio_of_means(b, m)
  label = stats.reduction_label(ratio)
  text = [f"AT / AT+EntM mean {JACOBIAN_PRIMARY} (primary): {ratio.estimate:.2f}x "
          f"[{ratio.low:.2f}, {ratio.high:.2f}], {label}"]
  bl, ml = Results.norms(at, "logits/fro"), Results.norms(entm, "logits/fro")
  if bl is not None and ml is not None:
    lr = stats.log_ratio_of_means(bl, ml)
    text.append(f"logit Jacobian (control, scale-confounded): {lr.estimate:.2f}x "
                f"[{lr.low:.2f}, {lr.high:.2f}]")
  t = Results.norms(at, JACOBIAN_PRIMARY, "jacobian_T_at_entm")
  if t is not None:
    tr = stats.log_ratio_of_means(b, t)
    temps = [x["jacobian_T_at_entm"]["temperature"] for x in at]
    text.append(f"AT / temperature-matched AT (T = {np.mean(temps):.2f} on average): "
                f"{tr.estimate:.2f}x [{tr.low:.2f}, {tr.high:.2f}], the part logit scale alone "
                "explains")
  return {"claim": claim, "label": label, "text": "; ".join(text) + "."}


def headline(claim: dict[str, Any]) -> str:
  """A claim's verdict line: its number, statement and label(s), in bold."""
  return f"**{claim['claim']}: {claim['label']}.**"
