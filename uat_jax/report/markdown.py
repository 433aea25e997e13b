"""REPORT.md's text from the collected data: status, verdicts, robust overfitting, best and last
checkpoints, differences to the baseline, Jacobian norms, the ablation, the masking checks and
the sweep."""

from __future__ import annotations

from typing import Any, Optional

import numpy as np

from uat_jax import tables
from uat_jax.config import fashion_mnist_regimes
from uat_jax.report import convergence
from uat_jax.report.claims import (claim_rows, headline, jacobian_estimate, overfitting_text,
                                   robust_overfitting)
from uat_jax.report.formatting import ci, mean_ci, pts, ratio
from uat_jax.report.view import (DATASETS, JACOBIAN_PRIMARY, NAMES, NOT_EVALUATED, WEAK,
                                 Results, spearman)


def status_section(r: Results) -> list[str]:
  rows = []
  for m in r.methods + [v for v in r.ablation]:
    runs = r.final.get(m) or r.ablation.get(m, [])
    trained = sum("train" in x for x in runs)
    role = "final" if m in r.final else "ablation"
    evaluated = {o: (sum(o in x["evals"] for x in planned), len(planned))
                 for o in r.specs(role)
                 if (planned := [x for x in runs if r.plans(x, o)])}
    rows.append([NAMES.get(m, m), f"{trained}/{len(runs)}"] +
                [", ".join(f"{o} {n}/{k}" for o, (n, k) in evaluated.items())])
  return [tables.markdown_table(["runs", "trained", "evaluated"], rows)]


def provenance_line(p: Optional[dict[str, Any]]) -> str:
  """Who collected the data: uat_jax's version, the commit, the date (each evaluation and run
  in data/ carries its own provenance)."""
  if not p:
    return ("Provenance: the collected data record none (collected before uat_jax 0.2.0, which "
            "records it in every result).")
  git = p.get("git")
  commit = (f" at commit {git['commit'][:12]}{' with uncommitted changes' if git['dirty'] else ''}"
            if git else "")
  return (f"Provenance: collected by uat_jax {p['uat_jax']}{commit} on {p['date'][:10]}; each "
          "evaluation and run in `data/` carries its own (versions, devices, threat model, "
          "seeds).")


def markdown(r: Results, claims: Optional[list[dict[str, Any]]] = None) -> str:
  """REPORT.md's text; `claims`: claim_rows(r) when the caller has them already."""
  s = r.study
  base = s["baseline"]
  n = next(iter(s["evals"].values()))["num_examples"]
  dataset = DATASETS.get(r.runs[0]["dataset"], r.runs[0]["dataset"])
  lines = [f"# Whether and how uncertainty promotion improves robustness: {dataset}", "",
           "Built by `python -m uat_jax.report` from the JSON in `data/` under the "
           "pre-registered plan (`docs/study_plan.md`, committed before the runs; its version "
           "3, committed before any result under it, sets the statistics). Training eps "
           f"{r.train_eps:g}; the paper's larger eps is {r.large:g}. Differences are in "
           "accuracy points, mean over paired seeds and test images with a 95% t-interval in "
           "brackets (seed and image parts of the variance, S - 1 degrees of freedom; shown "
           "to cover in simulation); the margin is 1 point. Each claim's primary comparisons "
           "are labelled, with the Holm procedure over all of them; everything else is "
           "exploratory, an estimate with its interval. The worst case is per test image over "
           "every attack of both presets (`paper` and `strong`) of one checkpoint. Evaluation "
           f"on the first {n} test images.", "",
           provenance_line(s.get("provenance")), "",
           "## Status", ""] + status_section(r) + ["", "## Verdicts", ""]
  for c in claim_rows(r) if claims is None else claims:
    lines += [f"{headline(c)} {c['text']}", ""]
  if r.superseded:
    lines += ["Superseded verdicts, kept beside the new ones as the plan requires: under "
              f"{r.superseded['plan']} (`data/verdicts_v2.json`, computed at commit "
              f"{r.superseded['computed_at_commit']}):", ""]
    lines += [f"- {headline(c)}" for c in r.superseded["claims"]] + [""]

  lines += ["## Robust overfitting", "",
            "Validation numbers of every final run (the best-checkpoint metric: PGD-20 "
            "accuracy at the training eps for the adversarially trained methods, clean accuracy "
            "for the others), best over training and at the end:", ""]
  rows = []
  for m in r.methods:
    for run in r.final[m]:
      bl, gap = r.best_and_last(run), r.train_gap(run)
      rows.append([NAMES[m], str(run["seed"]), run["best_metric"],
                   "pending" if not bl else f"{100 * bl[0]:.1f}",
                   "pending" if not bl else f"{100 * bl[1]:.1f}",
                   "pending" if not bl else pts(bl[1] - bl[0]),
                   "" if gap is None else pts(gap)])
  lines += [tables.markdown_table(["method", "seed", "metric", "best", "last", "last - best",
                    "train - validation robust at the end"], rows), "",
            overfitting_text(robust_overfitting(r)), "",
            "![train vs validation robust accuracy](figures/robust_overfitting.png)", ""]

  conv = convergence.check(r)
  if conv["label"] != "not planned":
    lines += ["## Convergence of the worst case", "", convergence.text(conv), "",
              "Robust accuracy (%) in the worst case over `paper` and `strong`, and with the "
              "check's attacks added (best checkpoints):", "",
              tables.markdown_table(["method", "seed", "eps", "paper + strong", "with the check",
                                     "change"], convergence.table_rows(conv)), ""]

  lines += pilot_section(r)

  lines += ["## Best and last checkpoint", "",
            "Accuracy (%), mean over seeds with the t-interval over seeds:", ""]
  header = ["method", "checkpoint", "clean"] + [f"PGD-20 @{e:g}" for e in (r.train_eps, r.large)] \
      + [f"worst @{e:g}" for e in (r.train_eps, r.large)]
  rows = []
  for m in r.methods:
    for cp in ("best", "last"):
      cell = lambda what, e: (mean_ci(r.accuracy(r.final[m], what, e, cp))
                              if r.covers(r.final[m], e, cp) else NOT_EVALUATED)
      rows.append([NAMES[m], cp, cell("clean", None)]
                  + [cell(what, e) for what in (WEAK, "worst") for e in (r.train_eps, r.large)])
  lines += [tables.markdown_table(header, rows), ""]

  lines += ["## Differences to the baseline", "",
            "Worst case, best checkpoint, per eps (AT+EntM and AT+LS against AT; EntM and LS "
            "against standard):", ""]
  header = ["method"] + [f"eps {e:g}" for e in r.grid]
  rows = []
  for m in r.methods:
    b = base if m.startswith("at_") else s["standard_baseline"] if m in ("entm", "ls") else None
    if b is None:
      continue
    cells = []
    for e in r.grid:
      d = r.paired(r.final[m], r.final[b], "worst", e)
      cells.append(NOT_EVALUATED if not r.covers(r.final[m] + r.final[b], e)
                   else "pending" if d is None else ci(d["interval"]))
    rows.append([f"{NAMES[m]} - {NAMES[b]}"] + cells)
  lines += [tables.markdown_table(header, rows), "", "![differences](figures/differences_vs_eps.png)", "",
            "Accuracy per eps (%, best checkpoint; PGD-20 / worst case):", ""]
  rows = [[NAMES[m], mean_ci(r.accuracy(r.final[m], "clean", None))]
          + [f"{mean_ci(r.accuracy(r.final[m], WEAK, e))} / "
             f"{mean_ci(r.accuracy(r.final[m], 'worst', e))}" if r.covers(r.final[m], e)
             else NOT_EVALUATED for e in r.grid]
          for m in r.methods]
  lines += [tables.markdown_table(["method", "clean"] + [f"eps {e:g}" for e in r.grid], rows), ""]

  lines += jacobian_section(r) + ablation_section(r) + checks_section(r) + sweep_section(r)
  return "\n".join(lines)


def pilot_section(r: Results) -> list[str]:
  """The v3 pilot (docs/study_plan.md, v3.4): each candidate run so far with its seeds' smoothed
  drops of validation robust accuracy, and the outcome."""
  if not r.study.get("pilot_v3"):
    return []
  lines = ["## Pilot: a regime where AT overfits (plan v3.4)", ""]
  p = r.pilot_v3
  if not p or not p.get("candidates"):
    return lines + ["Pending: no candidate has finished (`launch/study_v3.sh`).", ""]
  rows = []
  for name, c in p["candidates"].items():
    g = c["regime"]
    rows.append([name, g["model"], f"{g['train_size']:,}", f"{g['steps']:,}", f"{g['eps']:g}",
                 ", ".join(f"{100 * s['drop']:.1f}" for s in c["seeds"].values()),
                 "yes" if c["overfits"] else "no"])
  if p["chosen"]:
    outcome = f"Chosen: {p['chosen']}; the study in that regime follows (plan v3.5)."
  elif set(fashion_mnist_regimes.CANDIDATES) <= set(p["candidates"]):
    outcome = (f"No candidate meets the rule ({p['rule']}): robust overfitting could not be "
               "induced on Fashion-MNIST within these budgets, and no study in an overfitting "
               "regime is run (plan v3.5).")
  else:
    outcome = (f"No candidate so far meets the rule ({p['rule']}); the next is run in order, "
               "and if none does, robust overfitting could not be induced on Fashion-MNIST "
               "within these budgets.")
  return lines + [
      "AT, seeds 0 and 1, validation APGD-CE-20 accuracy at the training eps on 5,000 held-out "
      "images every 5% of training; the drop is the peak of its 3-evaluation moving average "
      "minus the mean of the last 3 evaluations; a candidate stops at its first seed below the "
      "rule, which it can then no longer meet (plan v3.10; `data/pilot_v3.json` has the "
      "curves):", "",
      tables.markdown_table(["candidate", "model", "training images", "steps", "eps",
                             "drop per seed (points)", "overfits"], rows), "", outcome, ""]


def jacobian_section(r: Results) -> list[str]:
  base = r.study["baseline"]
  lines = ["## Input-Jacobian norms", "",
           f"Per test image on the first {r.study['jacobian']['num_examples']} test images, best "
           "checkpoints; ratios are AT / method (geometric mean over seeds of the ratio of mean "
           "norms, t-interval over seeds with the image part of the variance). `T-matched AT` "
           "is AT with its logits divided by the temperature at which its mean predictive "
           "entropy on validation images equals the method's.", ""]
  rows = []
  for m in r.study["jacobian"]["methods"]:
    if m == base or not r.final.get(m):
      continue
    cells = []
    for q in ("probs/fro", "logits/fro", "probs/spectral"):
      e = jacobian_estimate(r, q, m)
      cells.append("pending" if e is None else ratio(e.interval()))
    matched = jacobian_estimate(r, JACOBIAN_PRIMARY, m, matched=True)
    if matched is None:
      cells.append("pending")
    else:
      at, _, _ = Results.pair(r.final[base], r.final[m])
      temps = np.mean([x[f"jacobian_T_{m}"]["temperature"] for x in at])
      cells.append(f"{ratio(matched.interval())} (T {temps:.2f})")
    rows.append([NAMES[m]] + cells)
  lines += [tables.markdown_table(["method", "AT / method probs/fro", "logits/fro", "probs/spectral",
                    "AT / T-matched AT probs/fro"], rows), ""]
  rows = []
  for m in r.study["jacobian"]["methods"]:
    sp = spearman(r, m)
    rows.append([NAMES[m], "pending" if sp is None else
                 f"{sp[0]:+.2f} ({', '.join(f'{x:+.2f}' for x in sp[1])})"])
  lines += ["Spearman correlation per test image between the primary norm and the worst-case "
            "robustness margin (mean over seeds; per seed in brackets):", "",
            tables.markdown_table(["method", "rho"], rows), "",
            "![Jacobian norm vs margin](figures/jacobian_vs_margin.png)", ""]
  return lines


def ablation_section(r: Results) -> list[str]:
  base = r.study["baseline"]
  ab = r.study["ablation"]
  lines = ["## Ablation (exploratory, no verdicts)", "",
           f"{NAMES[ab['method']]} variants minus AT on the same seeds ({list(ab['seeds'])}), "
           "best checkpoints, worst case over both presets at each eps; points with 95% "
           "intervals. The final runs use `regularizer.on=adversarial` and `attack.loss=ce`.", ""]
  variants = [("adversarial, ce (final runs)",
               [x for x in r.final.get(ab["method"], []) if x["seed"] in ab["seeds"]])]
  variants += [(v, r.ablation[v]) for v in ab["variants"] if v in r.ablation]
  rows = []
  for name, runs in variants:
    at = [x for x in r.final[base] if x["seed"] in ab["seeds"]]
    cells = []
    for what, eps in (("clean", None), ("worst", r.train_eps), ("worst", r.large)):
      d = r.paired(runs, at, what, eps)  # an ablation run's mask: its own outputs
      cells.append(NOT_EVALUATED if runs and not r.covers(runs + at, eps)
                   else "pending" if d is None else ci(d["interval"]))
    rows.append([name] + cells)
  lines += [tables.markdown_table(["variant", "clean", f"worst @{r.train_eps:g}", f"worst @{r.large:g}"], rows),
            ""]
  return lines


def checks_section(r: Results) -> list[str]:
  rows = []
  for m in r.methods:
    for run in r.final[m]:
      ev = run["evals"].get("paper")
      if not ev:
        continue
      failed = [c["name"] for c in ev["checks"] if not c["passed"]]
      rows.append([NAMES[m], str(run["seed"]),
                   f"{len(ev['checks']) - len(failed)}/{len(ev['checks'])}",
                   "; ".join(failed) or "none"])
  return ["## Gradient-masking checks", "", "The paper preset's checks on the best checkpoints "
          "(`uat_jax/evaluate/checks.py`):", "",
          tables.markdown_table(["method", "seed", "passed", "failed"], rows), ""]


def sweep_section(r: Results) -> list[str]:
  """The sweep's scores, and by how many validation images the chosen value led the next."""
  images = r.study.get("overrides", {}).get("evals", {}).get("pgd", {}).get("num_examples")
  rows = []
  for m, sw in r.sweep.items():
    scored = ", ".join(f"{v}: {100 * x:.1f}" for v, x in sw["values"].items())
    ranked = sorted(sw["values"].values(), reverse=True)
    lead = ("" if len(ranked) < 2 else f"{100 * (ranked[0] - ranked[1]):.1f}" + (
        f" ({round((ranked[0] - ranked[1]) * images)} of {images} images)" if images else ""))
    rows.append([NAMES.get(m, m), sw["key"], sw.get("metric", ""),
                 scored or "(one value, not swept)", str(sw["chosen"]), lead])
  sources = sorted({sw["source"] for sw in r.sweep.values() if sw.get("source")})
  note = ([f"Taken from the finished sweep in `{', '.join(sources)}` (the study's `sweep_from`): "
           "its runs are not retrained, and the first seed's final run of the chosen value is "
           "trained anew, so its validation score can differ from the sweep's.", ""]
          if sources else [])
  return ["## Sweep (validation split, final schedule, first seed)", "", *note,
          tables.markdown_table(["method", "parameter", "score (best logged, %)", "per value",
                                 "chosen", "lead over the next value (points)"], rows), "",
          "A lead of a few images is a choice the validation noise could have made either way; "
          "new runs choose by APGD-CE rather than PGD-20 (plan v3.3).", ""]
