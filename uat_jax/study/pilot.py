"""The pilot rules of docs/study_plan.md: which training regime shows robust overfitting, from
the pilot runs' validation curves: the plan's first rule ("Regime", launch/study_pilot.sh) and
version 3's (v3.4, launch/study_v3.sh: `python -m uat_jax.study.pilot --root=R --out=F`)."""

from __future__ import annotations

import math
import os
from typing import Any, Optional

from uat_jax import config as config_lib
from uat_jax import files, tables
from uat_jax.config import fashion_mnist_regimes
from uat_jax.errors import UatError

PILOT_CANDIDATES = ("R1", "R2")
PILOT_DROP = 0.01  # validation PGD accuracy: best after the first decay minus the last
PILOT_GAP = 0.05  # train/accuracy_adv minus validation PGD accuracy at the end


def pilot_curves(workdir: str) -> dict[str, list]:
  """{"val": [[step, eval/pgd_accuracy]], "train": [[step, train/accuracy_adv]]} of a run."""
  curves = files.read_curves(os.path.join(workdir, "metrics.jsonl"),
                             ("eval/pgd_accuracy", "train/accuracy_adv"))
  return {"val": curves.get("eval/pgd_accuracy", []),
          "train": curves.get("train/accuracy_adv", [])}


def pilot_choice(pilot_root: str) -> dict[str, Any]:
  """The plan's rule over the pilot's finished runs: per candidate its drop (best validation PGD
  accuracy after the first learning-rate decay minus the last) and end gap (train robust minus
  validation PGD accuracy at the end), whether robust overfitting shows (drop >= PILOT_DROP and
  gap >= PILOT_GAP), and the chosen candidate: the first where it shows, else R1."""
  out: dict[str, Any] = {"rule": f"drop >= {PILOT_DROP} and end gap >= {PILOT_GAP}",
                         "candidates": {}}
  for name in PILOT_CANDIDATES:
    w = os.path.join(pilot_root, name)
    if not os.path.exists(os.path.join(w, "metrics.jsonl")):
      raise UatError(f"no pilot run in {w}: run launch/study_pilot.sh first")
    config = config_lib.load_workdir_config(w)
    steps = math.ceil(config.num_epochs * config.data.train_size / config.batch_size)
    curves = pilot_curves(w)
    last_step = curves["val"][-1][0] if curves["val"] else 0
    if last_step != steps:
      raise UatError(f"the pilot run {w} has not finished (step {last_step} of {steps}): rerun "
                     "launch/study_pilot.sh, which resumes it")
    decay = min(config.optimizer.boundaries) * last_step
    after = [v for s, v in curves["val"] if s > decay]
    end_val, end_train = curves["val"][-1][1], curves["train"][-1][1]
    drop, gap = max(after) - end_val, end_train - end_val
    out["candidates"][name] = {
        "train_size": config.data.train_size, "epochs": config.num_epochs, "steps": last_step,
        "best_after_decay": max(after), "end_val": end_val, "end_train": end_train,
        "drop": drop, "gap": gap, "overfits": bool(drop >= PILOT_DROP and gap >= PILOT_GAP),
        "curves": curves}
  showing = [n for n, c in out["candidates"].items() if c["overfits"]]
  out["chosen"] = showing[0] if showing else PILOT_CANDIDATES[0]
  out["overfitting_observed"] = bool(showing)
  return out


def write_pilot_choice(pilot_root: str, out: Optional[str] = None) -> dict[str, Any]:
  """pilot_choice, written to `out` (default PILOT_ROOT/choice.json) and printed as a table."""
  choice = pilot_choice(pilot_root)
  files.write_json(out or os.path.join(pilot_root, "choice.json"), choice)
  print(tables.markdown_table(
      ["candidate", "train_size", "epochs", "best val PGD after decay", "end val", "end train",
       "drop", "gap", "overfits"],
      [[name, c["train_size"], f"{c['epochs']:g}", f"{c['best_after_decay']:.3f}",
        f"{c['end_val']:.3f}", f"{c['end_train']:.3f}", f"{c['drop']:.3f}", f"{c['gap']:.3f}",
        c["overfits"]] for name, c in choice["candidates"].items()]))
  print(f"chosen: {choice['chosen']} (robust overfitting observed: "
        f"{choice['overfitting_observed']})")
  return choice


# --------------------------------------------------------------------------------------------
# Version 3 of the plan (docs/study_plan.md, v3.4): a regime where AT overfits.
# --------------------------------------------------------------------------------------------

V3_CANDIDATES = fashion_mnist_regimes.CANDIDATES
V3_SEEDS = (0, 1)
V3_DROP = 0.03  # each seed's smoothed peak minus end of validation robust accuracy
V3_WINDOW = 3  # evaluations in the moving average and in the end's mean
V3_VALIDATION = fashion_mnist_regimes.VALIDATION


def v3_metric(eps: float) -> str:
  """The validation robust accuracy the v3 pilot reads and keeps best checkpoints by: APGD-CE
  (20 iterations) at the training eps on the validation images (the suite evaluator's)."""
  return f"suite/worst_case@{eps:.4g}"


def v3_config(candidate: str, seed: int):
  """The training config of one v3 pilot run: AT under the candidate's regime with the plan's
  optimizer (SGD 0.05, momentum 0.9, weight decay 5e-4, divided by 10 at 50% and 75%), PGD-10
  of step eps / 4, and APGD-CE-20 on 5,000 held-out validation images every 5% of training."""
  c = config_lib.from_file("fashion_mnist", "at")
  c.update(fashion_mnist_regimes.overrides(candidate))
  c.seed, eps, every = seed, c.attack.eps, fashion_mnist_regimes.validation_every(candidate)
  s = c.evals.suite
  s.preset, s.eps, s.num_examples, s.every_steps = "", (eps,), V3_VALIDATION, every
  s.checks, s.only_robust, s.batch_size = False, False, 500
  with c.unlocked():
    s.attacks["APGD-CE-20"] = {"attack": "apgd", "steps": 20}
  c.best_checkpoint.metric = v3_metric(eps)
  return c


def smoothed_drop(curve: list) -> float:
  """The plan's drop: the maximum of the moving average over V3_WINDOW consecutive evaluations
  minus the mean of the last V3_WINDOW ([[step, value]] in step order)."""
  values = [v for _, v in curve]
  if len(values) < V3_WINDOW:
    raise UatError(f"a pilot curve needs at least {V3_WINDOW} evaluations, got {len(values)}")
  smooth = [sum(values[i:i + V3_WINDOW]) / V3_WINDOW for i in range(len(values) - V3_WINDOW + 1)]
  return max(smooth) - smooth[-1]


def v3_outcome(root: str, candidate: str, seeds_run: tuple[int, ...] = V3_SEEDS) -> dict[str, Any]:
  """The rule on one candidate's finished runs (ROOT/<candidate>_s<seed>, for `seeds_run`): per
  seed the curve and its drop; `overfits` when every seed of V3_SEEDS ran and dropped at least
  V3_DROP."""
  eps = V3_CANDIDATES[candidate][3]
  seeds = {}
  for seed in seeds_run:
    w = os.path.join(root, f"{candidate}_s{seed}")
    curve = files.read_curves(os.path.join(w, "metrics.jsonl"), (v3_metric(eps),)).get(
        v3_metric(eps), []) if os.path.exists(os.path.join(w, "metrics.jsonl")) else []
    if not curve or curve[-1][0] != V3_CANDIDATES[candidate][2]:
      raise UatError(f"the pilot run {w} has not finished: rerun launch/study_v3.sh, which "
                     "resumes it")
    seeds[str(seed)] = {"drop": smoothed_drop(curve), "curve": curve}
  return {"regime": dict(zip(("model", "train_size", "steps", "eps"), V3_CANDIDATES[candidate])),
          "seeds": seeds, "overfits": len(seeds) == len(V3_SEEDS) and all(
              s["drop"] >= V3_DROP for s in seeds.values())}


def v3_known(out: str, rule: str) -> dict[str, Any]:
  """The candidates' outcomes an earlier pass of the pilot wrote to `out` under the same rule
  ({} if none): a resumed pilot recomputes its candidates one by one and keeps the others in
  `out` meanwhile, so the file never shows fewer candidates than had finished (the outcomes are
  recomputed from the runs' curves, so a recomputed entry equals the kept one)."""
  if not os.path.exists(out):
    return {}
  prior = files.read_json(out)
  return dict(prior.get("candidates", {})) if prior.get("rule") == rule else {}


def run_v3(root: str, out: str) -> dict[str, Any]:
  """The v3 pilot: the candidates in order, each with its seeds (resuming finished steps), until
  one meets the rule; a candidate stops at its first seed that drops less than the rule asks
  (it can no longer meet it). Writes the outcome of every candidate run to `out` after each."""
  from uat_jax import evaluators, train  # deferred: the rule above needs no JAX
  result: dict[str, Any] = {"rule": f"every seed's smoothed drop >= {V3_DROP}",
                            "candidates": {}, "chosen": None}
  known = v3_known(out, result["rule"])
  for candidate in V3_CANDIDATES:
    ran: tuple[int, ...] = ()
    for seed in V3_SEEDS:
      c = v3_config(candidate, seed)
      train.train_and_evaluate(c, os.path.join(root, f"{candidate}_s{seed}"),
                               evaluators=evaluators.for_training(c))
      ran += (seed,)
      outcome = v3_outcome(root, candidate, ran)
      if outcome["seeds"][str(seed)]["drop"] < V3_DROP:
        break  # every seed must drop: this candidate cannot meet the rule any more
    result["candidates"][candidate] = outcome
    drops = [f"{100 * s['drop']:.1f}" for s in result["candidates"][candidate]["seeds"].values()]
    print(f"pilot {candidate}: smoothed drops {', '.join(drops)} points; overfits: "
          f"{result['candidates'][candidate]['overfits']}", flush=True)
    if result["candidates"][candidate]["overfits"]:
      result["chosen"] = candidate
    known.update(result["candidates"])
    files.write_json(out, {**result, "candidates": {
        n: known[n] for n in V3_CANDIDATES if n in known}}, indent=1)
    if result["chosen"]:
      break
  return result


def run() -> None:
  """python -m uat_jax.study.pilot --root=ROOT --out=OUT.json: the v3 pilot, resumable
  (launch/study_v3.sh runs it); bad input is one `error:` line, a SIGTERM saves and exits 143."""
  from absl import flags
  from uat_jax import cli
  flags.DEFINE_string("root", None, "Directory of the pilot's runs (ROOT/<candidate>_s<seed>).")
  flags.DEFINE_string("out", None, "Where the outcome goes, e.g. "
                      "results/fashion_mnist/data/pilot_v3.json.")
  flags.mark_flags_as_required(["root", "out"])
  cli.run_app(lambda: run_v3(flags.FLAGS.root, flags.FLAGS.out), flags_parser=cli.parse_flags)


if __name__ == "__main__":
  run()
