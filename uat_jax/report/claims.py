"""The verdict rules of the pre-registered plan (docs/study_plan.md, "Outcomes and tests" as
version 3 of the plan states them): the labelled comparisons of the five claims form one family,
each comparison's label is read off its t-interval at the level the Holm procedure gives it
(uat_jax.stats), and everything else is an estimate with its 95% interval and no label.
`claim_rows` returns one {"claim", "label", "text"} per claim."""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Optional

import numpy as np

from uat_jax import stats
from uat_jax.report import convergence
from uat_jax.report.formatting import ci, excludes, p_values, ratio
from uat_jax.report.view import (JACOBIAN_PRIMARY, NAMES, NOT_EVALUATED, PENDING, WEAK,
                                 Results)

MARGIN = 0.01  # the plan's Delta: 1.0 point
VANISH = "reproduced (gains vanish)"
PERSIST = "not reproduced (gains persist)"
MCNEMAR = ("McNemar's exact test per seed asks whether two trained networks differ on these "
           "images, not whether two methods do")


def gain_rule(i: stats.Interval) -> str:
  return stats.gain_label(i, MARGIN)


def vanish_rule(i: stats.Interval) -> str:
  """Claim 4: a worst-case gain below the margin (vanished) or above it (persisted)."""
  return VANISH if i.high < MARGIN else PERSIST if i.low > MARGIN else stats.INCONCLUSIVE


def overestimate_rule(i: stats.Interval) -> str:
  """Claim 5: PGD-20's gain exceeds the worst case's by more than the margin, or by less."""
  return ("reproduced" if i.low > MARGIN else "not reproduced" if i.high < MARGIN
          else stats.INCONCLUSIVE)


@dataclasses.dataclass
class Comparison:
  """One labelled comparison of the family: its estimate (None: pending) and the rule that
  reads a label off an interval."""
  estimate: Optional[stats.Estimate]
  rule: Callable[[stats.Interval], str]
  label: str = "pending"
  p_adjusted: float = 1.0

  def text(self) -> str:
    if self.estimate is None:
      return PENDING
    i = self.estimate.interval()
    number = ratio(i) if self.estimate.log else f"{ci(i)} points ({excludes(i)})"
    return f"{number}, {self.label} (Holm-adjusted p {self.p_adjusted:.2g})"


def decide(family: list[Comparison]) -> None:
  """Holm over the family (docs/study_plan.md, v3.2): pending comparisons count with p = 1."""
  ps = [1.0 if c.estimate is None else
        c.estimate.p_value(lambda i, c=c: c.rule(i) != stats.INCONCLUSIVE) for c in family]
  for c, (decisive, level, adjusted) in zip(family, stats.holm(ps)):
    c.p_adjusted = adjusted
    if c.estimate is not None:
      c.label = c.rule(c.estimate.interval(level)) if decisive else stats.INCONCLUSIVE


def robust_overfitting(r: Results) -> dict[str, Any]:
  """Over the baseline's seeds: the plan's first rule (last minus best validation accuracy; it
  occurred if the mean is below -1 point and its interval lies below 0) and v3's measure (the
  mean between the learning-rate decays minus the mean after the second: positive is a fall)."""
  base = r.study["baseline"]
  drops = [bl[1] - bl[0] for bl in (r.best_and_last(x) for x in r.final[base]) if bl]
  if len(drops) < len(r.final[base]):  # the rule is over every seed: none is applied before
    return {"label": PENDING, "trained": len(drops), "seeds": len(r.final[base])}
  i = stats.seed_mean(drops).interval()
  occurred = i.estimate < -MARGIN and i.high < 0
  gaps = [g for g in (r.train_gap(x) for x in r.final[base]) if g is not None]
  falls = [f for f in (r.fall_after_decay(x) for x in r.final[base]) if f is not None]
  return {"interval": i, "drops": drops, "occurred": occurred,
          "gap": stats.seed_mean(gaps).interval() if gaps else None,
          "fall": (stats.seed_mean(falls).interval(), falls)
          if len(falls) == len(drops) else None,
          "label": "occurred" if occurred else "did not occur (by the plan's rule)"}


def overfitting_text(ro: dict[str, Any]) -> str:
  """What the final AT runs say about robust overfitting, and what that means for claim 1."""
  if "interval" not in ro:
    return (f"Robust overfitting: pending ({ro['trained']} of the {ro['seeds']} AT seeds "
            "trained).")
  text = ("Robust overfitting in the final AT runs (last minus best validation PGD-20 "
          f"accuracy): {ci(ro['interval'])} points, {ro['label']}")
  if ro["fall"] is not None:
    fall, per_seed = ro["fall"]
    text += ("; mean validation PGD-20 accuracy between the learning-rate decays minus after "
             f"the second (v3's measure, a fall is positive): {ci(fall)} points "
             f"({excludes(fall)}; per seed {', '.join(f'{100 * f:+.1f}' for f in per_seed)})")
  if ro["gap"] is not None:
    text += f"; train minus validation robust accuracy at the end: {ci(ro['gap'])} points"
  if not ro["occurred"]:
    rose = ro["fall"] is not None and ro["fall"][0].high < 0
    text += (". By the plan's rule AT did not overfit"
             + (", and by v3's measure its validation robust accuracy rose after the second "
                "decay (the last-minus-best figure is the end minus the maximum of many noisy "
                "evaluations, below 0 even without a fall)" if rose else "")
             + ", so claim 1 is tested where there is no robust overfitting for a regularizer "
             "to remove: a null result here does not rule out gains where AT overfits (longer "
             "training, fewer images, larger models, CIFAR-10)")
  return text + "."


def last_vs_best(r: Results, m: str, b: str, eps) -> Optional[stats.Estimate]:
  """(M - B at the last checkpoint) - (M - B at the best), worst case at eps, paired by seed and
  test image: the gain a method keeps where the baseline overfits (plan v3.5)."""
  m_runs, b_runs, _ = Results.pair(r.final[m], r.final[b])
  parts = [r.masks(runs, "worst", eps, cp) for runs in (m_runs, b_runs) for cp in ("last", "best")]
  if any(p is None for p in parts):
    return None
  m_last, m_best, b_last, b_best = (p.astype(np.float64) for p in parts)
  return stats.two_way((m_last - b_last) - (m_best - b_best))


def control_text(r: Results, wa: str, base: str, methods: list[str]) -> str:
  """The weight-averaging control beside claim 1, unlabelled (plan v3.11): its own last-vs-best
  estimand against the baseline, and each regularized method minus the control at the last
  checkpoint (worst case at the training eps)."""
  own = last_vs_best(r, wa, base, r.train_eps)
  text = (f"control {NAMES[wa]} (AT with weight averaging; exploratory, unlabelled): "
          f"{NAMES[wa]} - AT at the last checkpoint minus at the best, eps {r.train_eps:g}: "
          + _exploratory(None if own is None else {"interval": own.interval()}))
  for m in methods:
    d, _ = _paired_estimate(r, m, wa, "worst", r.train_eps, "last")
    text += f"; {NAMES[m]} - {NAMES[wa]}, last checkpoint, eps {r.train_eps:g}: {_exploratory(d)}"
  return text


def _paired_estimate(r: Results, m: str, b: str, what: str, eps, checkpoint: str = "best"):
  d = r.paired(r.final[m], r.final[b], what, eps, checkpoint)
  return d, (None if d is None else d["estimate"])


def _exploratory(d: Optional[dict[str, Any]]) -> str:
  """An unlabelled estimate: its interval and what it excludes."""
  return PENDING if d is None else f"{ci(d['interval'])} points ({excludes(d['interval'])})"


def claim_rows(r: Results) -> list[dict[str, Any]]:
  """One entry per claim: {"claim", "label", "text"}."""
  base, std = r.study["baseline"], r.study["standard_baseline"]
  at_methods, alone = r.present("at_entm", "at_ls"), r.present("entm", "ls")
  small = min(r.grid)
  # Claim 1's primary estimand: the gain at the best checkpoint and the large eps, or (a study
  # with `estimand` last_vs_best, where AT overfits) the gain kept at the last checkpoint.
  overfit = r.study.get("estimand") == "last_vs_best"
  c1 = {m: Comparison(last_vs_best(r, m, base, r.train_eps) if overfit else
                      _paired_estimate(r, m, base, "worst", r.large)[1], gain_rule)
        for m in at_methods}
  c2 = {m: Comparison(_paired_estimate(r, m, base, "clean", None)[1], gain_rule)
        for m in at_methods}
  c3 = Comparison(jacobian_estimate(r, JACOBIAN_PRIMARY), stats.reduction_label)
  # Claim 4 at the last checkpoints (every method at the end of one schedule), if its
  # precondition holds there: a PGD-20 gain at the smallest eps (95% interval above 0).
  c4, pre4 = {}, {}
  for m in alone:
    if not r.covers(r.final[m] + r.final[std], small, "last"):
      pre4[m] = "not evaluated"  # the study runs no last checkpoint at this eps
      continue
    weak, _ = _paired_estimate(r, m, std, WEAK, small, "last")
    pre4[m] = None if weak is None else weak["interval"].low > 0
    if pre4[m] is not False:
      c4[m] = Comparison(_paired_estimate(r, m, std, "worst", small, "last")[1]
                         if pre4[m] else None, vanish_rule)
  # Claim 5: one overestimate per method whose PGD-20 gain holds (eps 0.1 for EntM and LS,
  # the large eps for AT+EntM and AT+LS).
  c5, pre5 = {}, {}
  for m, b, eps in ([(m, std, r.train_eps) for m in alone]
                    + [(m, base, r.large) for m in at_methods]):
    weak, _ = _paired_estimate(r, m, b, WEAK, eps)
    pre5[m] = (eps, b, None if weak is None else weak["interval"].low > 0)
    if pre5[m][2] is not False:
      c5[m] = Comparison(overestimate(r, r.final[m], r.final[b], eps)
                         if pre5[m][2] else None, overestimate_rule)
  family = [*c1.values(), *c2.values(), c3, *c4.values(), *c5.values()]
  decide(family)
  note = (f" Labels come from the Holm procedure over the {len(family)} labelled comparisons "
          "of claims 1-5.")
  conv = convergence.check(r)
  qualifier = convergence.qualifier(conv)

  # 1. AT+EntM / AT+LS vs AT, worst case at the large eps, best checkpoint.
  parts = []
  for m in at_methods:
    if overfit:
      parts.append(f"{NAMES[m]} - AT at the last checkpoint minus at the best, eps "
                   f"{r.train_eps:g} (primary): {c1[m].text()}")
      others = (("worst", r.train_eps, "best"), ("worst", r.train_eps, "last"),
                ("worst", r.large, "best"), ("worst", r.large, "last"), (WEAK, r.large, "best"))
    else:
      primary, _ = _paired_estimate(r, m, base, "worst", r.large)
      parts.append(f"{NAMES[m]} - AT, best checkpoint, eps {r.large:g} (primary): "
                   f"{c1[m].text()}"
                   + (f"; McNemar p per seed {p_values(primary['mcnemar'])}" if primary else ""))
      others = (("worst", r.large, "last"), ("worst", r.train_eps, "best"),
                (WEAK, r.large, "best"))
    for what, eps, cp in others:
      name = "PGD-20 alone" if what == WEAK else f"worst case, {cp} checkpoint"
      parts.append(f"{name}, eps {eps:g} (exploratory): "
                   f"{_exploratory(_paired_estimate(r, m, base, what, eps, cp)[0])}")
  parts += [control_text(r, wa, base, at_methods) for wa in r.present("at_wa")]
  large = ("twice the training eps" if math.isclose(r.large, 2 * r.train_eps)
           else f"the large eps {r.large:g}")
  claim1 = ("1. AT+EntM and AT+LS keep a gain over AT where AT overfits (worst case, last vs "
            "best checkpoint)" if overfit else
            f"1. AT+EntM and AT+LS beat AT at {large} (worst case)")
  out = [{"claim": claim1,
          "label": "; ".join(f"{NAMES[m]}: {c1[m].label}" for m in at_methods) + qualifier,
          "text": "; ".join(parts) + f". {MCNEMAR}. " + convergence.text(conv) + " "
                  + overfitting_text(robust_overfitting(r))}]

  # 2. Clean accuracy kept or improved.
  out.append({"claim": "2. AT+EntM and AT+LS keep or improve AT's clean accuracy",
              "label": "; ".join(f"{NAMES[m]}: {c2[m].label}" for m in at_methods),
              "text": "; ".join(f"{NAMES[m]} - AT clean accuracy: {c2[m].text()}"
                                for m in at_methods)
                      + ". \"No gain, within margin\" is consistent with keeping it."})

  # 3. The Jacobian, primary measure probs/fro; controls beside it.
  out.append(jacobian_claim(r, c3))

  # 4. EntM and LS alone vs standard at the smallest eps, last checkpoints.
  parts, labels = [], []
  for m in alone:
    label = (stats.INCONCLUSIVE + " (precondition not met: no PGD-20 gain)"
             if pre4[m] is False else stats.INCONCLUSIVE + " (the study evaluates no last "
             f"checkpoint at eps {small:g})" if pre4[m] == "not evaluated" else c4[m].label)
    labels.append(f"{NAMES[m]}: {label}")
    weak, _ = _paired_estimate(r, m, std, WEAK, small, "last")
    text = (f"{NAMES[m]} - standard at eps {small:g}, last checkpoints: "
            + (NOT_EVALUATED if pre4[m] == "not evaluated" else
               f"PGD-20 {_exploratory(weak)}"))
    if m in c4:
      text += f", worst case {c4[m].text()}"
    best_weak, _ = _paired_estimate(r, m, std, WEAK, small)
    best_worst, _ = _paired_estimate(r, m, std, "worst", small)
    text += (f"; best checkpoints (exploratory: chosen by clean validation accuracy at "
             f"different stages of training): PGD-20 {_exploratory(best_weak)}, worst case "
             f"{_exploratory(best_worst)}")
    parts.append(text)
  out.append({"claim": "4. EntM and LS alone: small-eps gains under PGD-20 vanish under strong "
                       "attacks", "label": "; ".join(labels), "text": "; ".join(parts) + "."})

  # 5. Weak attacks overestimate the uncertainty-promoting models.
  parts = []
  for m, (eps, b, met) in pre5.items():
    weak, _ = _paired_estimate(r, m, b, WEAK, eps)
    parts.append(f"{NAMES[m]} at eps {eps:g}: PGD-20 gain {_exploratory(weak)}"
                 + (f", overestimate {c5[m].text()}" if m in c5 else
                    " (precondition not met)"))
  labels = [c.label for c in c5.values()]
  if not c5:
    label = stats.INCONCLUSIVE + " (precondition not met: no PGD-20 gain to vanish)"
  elif "reproduced" in labels:
    label = "reproduced"
  elif all(x == "not reproduced" for x in labels):
    label = "not reproduced"
  else:
    label = "pending" if all(x == "pending" for x in labels) else stats.INCONCLUSIVE
  out.append({"claim": "5. Weak attacks overestimate uncertainty-promoting models",
              "label": label + (" (some results pending)" if "pending" in labels
                                and label != "pending" else "") + qualifier,
              "text": "; ".join(parts) + ". Overestimate = gain under PGD-20 minus gain in the "
                      "worst case (points)." + note})
  return out


def overestimate(r: Results, m_runs, b_runs, eps) -> Optional[stats.Estimate]:
  """Gain under PGD-20 minus gain in the worst case, paired by seed: per image, M's (PGD-20
  robust and not worst-case robust) minus B's, each in {0, 1}."""
  m_runs, b_runs, _ = Results.pair(m_runs, b_runs)
  parts = []
  for runs in (m_runs, b_runs):
    weak, worst = r.masks(runs, WEAK, eps), r.masks(runs, "worst", eps)
    if weak is None or worst is None:
      return None
    parts.append((weak & (1 - worst)).astype(np.uint8))
  return stats.paired_difference(*parts)


def jacobian_estimate(r: Results, quantity: str, method: str = "at_entm",
                      matched: bool = False) -> Optional[stats.Estimate]:
  """log of AT's mean norm over the method's (or, `matched`, over AT's own with its logits
  divided by the temperature matching the method's entropy), on the seeds both have; None
  while any is missing."""
  at, other, _ = Results.pair(r.final[r.study["baseline"]], r.final[method])
  b = Results.norms(at, quantity)
  m = Results.norms(at, quantity, f"jacobian_T_{method}") if matched else Results.norms(
      other, quantity)
  return None if b is None or m is None else stats.log_ratio_of_means(b, m)


def jacobian_claim(r: Results, primary: Comparison) -> dict[str, Any]:
  claim = "3. EntM shrinks the input-Jacobian norm relative to AT (paper: about 10x)"
  if primary.estimate is None:
    return {"claim": claim, "label": "pending", "text": PENDING + "."}
  text = [f"AT / AT+EntM mean {JACOBIAN_PRIMARY} (primary): {primary.text()}"]
  logits = jacobian_estimate(r, "logits/fro")
  if logits is not None:
    text.append(f"logit Jacobian (control, scale-confounded): {ratio(logits.interval())}")
  matched = jacobian_estimate(r, JACOBIAN_PRIMARY, matched=True)
  if matched is not None:
    at, _, _ = Results.pair(r.final[r.study["baseline"]], r.final["at_entm"])
    temps = [x["jacobian_T_at_entm"]["temperature"] for x in at]
    text.append(f"AT / temperature-matched AT (T = {np.mean(temps):.2f} on average): "
                f"{ratio(matched.interval())}, the part logit scale alone explains")
  text.append("the probability Jacobian was made the primary measure after the first, "
              "unregistered version of the study had shown it unchanged (docs/study_plan.md, "
              "v3.1)")
  return {"claim": claim, "label": primary.label, "text": "; ".join(text) + "."}


def headline(claim: dict[str, Any]) -> str:
  """A claim's verdict line: its number, statement and label(s), in bold."""
  return f"**{claim['claim']}: {claim['label']}.**"
