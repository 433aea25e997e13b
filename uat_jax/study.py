r"""The paper's study as one resumable pipeline (the grid of launch/reproduce.sh).

  python -m uat_jax.study --study=configs/fashion_mnist_study.py[:quick] --root=workdirs/study

Steps, over workdirs under --root (the study config says what each one runs):
  1. sweep   beta (EntM) / alpha (LS) per regularized method, trained on the train split less a
             validation split (data.validation_size) and scored there by PGD accuracy at the
             training eps; the choice goes to ROOT/sweep.json. The test split is not read.
  2. train   every method with its chosen value, for every seed: ROOT/runs/<method>_s<seed>.
  3. evaluate each run with the study's evaluation outputs (presets `paper` and `strong`), into
             W/eval/<output>/; transfer attacks use the same method's next seed as surrogate.
  4. jacobian input-Jacobian norms of the seed-0 runs, compared with the baseline method
             (ROOT/runs/<baseline>_s0/jacobian/comparison.*).
Each step calls the functions `python -m uat_jax.main` calls. Rerunning skips finished pieces
(a training run with its train_result.json, an evaluation with its results.json, the Jacobian
comparison when it exists) and resumes unfinished ones from their checkpoints / saved attacks.
"""

from __future__ import annotations

import math
import os
import time
from typing import Any, Optional

import ml_collections
from absl import flags, logging
from ml_collections import config_flags

from uat_jax import cli, config_lib, evaluators, files, jacobian_compare, train
from uat_jax.errors import UatError


def _merge(node, values: dict[str, Any], prefix: str = "") -> None:
  """Sets values (nested dicts shaped like the config, or dotted keys) into a config."""
  for key, value in values.items():
    head, _, rest = key.partition(".")
    if rest:
      value, key = {rest: value}, head
    if key not in node:
      raise UatError(f"the study sets {prefix}{key}, which is not a config field")
    if isinstance(value, dict):
      _merge(node[key], value, f"{prefix}{key}.")
    else:
      node[key] = value


def training_config(study, method: str, seed: int,
                    extra: Optional[dict[str, Any]] = None) -> ml_collections.ConfigDict:
  """study.config:method with study.overrides (shaped like the config), the seed and `extra`
  (shaped the same, or dotted keys from the sweep) applied."""
  c = config_lib.from_file(study.config, method)
  with c.unlocked():
    _merge(c, study.overrides.to_dict())
    _merge(c, extra or {})
    c.seed = seed
  return c


def run_dir(root: str, method: str, seed: int) -> str:
  return os.path.join(root, "runs", f"{method}_s{seed}")


def sweep_dir(root: str, method: str, key: str, value) -> str:
  return os.path.join(root, "sweep", f"{method}_{key.split('.')[-1]}{value}")


def _train(config, workdir: str) -> dict[str, Any]:
  """Trains (or resumes) unless W/train_result.json says it finished; returns that result."""
  done = os.path.join(workdir, "train_result.json")
  if os.path.exists(done):
    logging.info("finished before: %s", workdir)
    return files.read_json(done)
  result = train.train_and_evaluate(config, workdir, evaluators=evaluators.for_training(config))
  files.write_json(done, result)
  return result


def sweep(study, root: str) -> dict[str, Any]:
  """Trains every sweep value on the validation split; returns and writes ROOT/sweep.json:
  {method: {"key", "values": {value: validation result}, "chosen"}}. The score is PGD accuracy
  at the training eps (ties: the first value)."""
  out = {}
  for method, (key, values) in study.sweep.items():
    if method not in study.methods:
      continue
    if len(values) == 1:  # nothing to choose
      out[method] = {"key": key, "values": {}, "chosen": values[0], "score": "not swept"}
      continue
    scores = {}
    for value in values:
      config = training_config(study, method, study.seeds[0],
                               {**study.sweep_overrides.to_dict(), key: value})
      logging.info("sweep %s %s=%s", method, key, value)
      scores[str(value)] = _train(config, sweep_dir(root, method, key, value))
    chosen = max(values, key=lambda v: scores[str(v)]["eval/pgd_accuracy"])
    out[method] = {"key": key, "values": scores, "chosen": chosen,
                   "score": "pgd_accuracy at the training eps on the validation split"}
    logging.info("sweep %s: chose %s=%s", method, key, chosen)
  files.write_json(os.path.join(root, "sweep.json"), out)
  return out


def final_runs(study, chosen: dict[str, Any]) -> list[tuple[str, int, Any]]:
  """(method, seed, config) of every final run, with the sweep's choices applied."""
  runs = []
  for method in study.methods:
    extra = {chosen[method]["key"]: chosen[method]["chosen"]} if method in chosen else {}
    for seed in study.seeds:
      runs.append((method, seed, training_config(study, method, seed, extra)))
  return runs


def _evaluate(study, config, workdir: str, output: str, surrogate: str) -> None:
  if os.path.exists(os.path.join(workdir, "eval", output, "results.json")):
    logging.info("evaluated before: %s (%s)", workdir, output)
    return
  spec = study.evals[output]
  with config.unlocked():
    s = config.evals.suite
    config.evals.on_evaluate = ("suite",)
    s.output = output
    s.preset = spec["preset"]
    s.eps = tuple(spec["eps"])
    s.num_examples = spec["num_examples"]
    s.only_robust = spec.get("only_robust")
    s.checks = output == "paper"  # the masking checks once per run
    s.surrogate_workdir = surrogate
    for name, entry in spec.get("attacks", {}).items():  # after the preset's, by name order
      s.attacks[name] = ml_collections.ConfigDict(entry.to_dict())
  evaluators.evaluate_workdir(config, workdir)


def _compilation_cache(root: str) -> None:
  """JAX's persistent compilation cache under ROOT (unless the user set one): the study's
  models share shapes, so most evaluation and Jacobian programs compile once for all of them,
  and a rerun compiles nothing it compiled before."""
  import jax
  if not jax.config.jax_compilation_cache_dir:
    jax.config.update("jax_compilation_cache_dir", os.path.abspath(os.path.join(root, "jax_cache")))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.1)


def run(study, root: str) -> None:
  """The whole pipeline; each piece is skipped when finished before."""
  _compilation_cache(root)
  t0 = time.time()
  chosen = sweep(study, root)
  runs = final_runs(study, chosen)
  for i, (method, seed, config) in enumerate(runs):
    logging.info("[train %d/%d] %s seed %d (%.0f s so far)", i + 1, len(runs), method, seed,
                 time.time() - t0)
    _train(config, run_dir(root, method, seed))
  for i, (method, seed, config) in enumerate(runs):
    others = [s for s in study.seeds if s != seed]
    surrogate = run_dir(root, method, others[0]) if others else ""
    for output in study.evals:
      logging.info("[evaluate %d/%d] %s seed %d: %s (%.0f s so far)", i + 1, len(runs), method,
                   seed, output, time.time() - t0)
      _evaluate(study, config, run_dir(root, method, seed), output, surrogate)
  seed0 = [(m, c) for m, s, c in runs if s == study.seeds[0]]
  seed0.sort(key=lambda mc: mc[0] != study.baseline)  # the baseline first: it gets the table
  workdirs = [run_dir(root, m, study.seeds[0]) for m, _ in seed0]
  if os.path.exists(os.path.join(workdirs[0], "jacobian", "comparison.csv")):
    logging.info("Jacobians compared before: %s", workdirs[0])
  else:
    config = seed0[0][1]
    with config.unlocked():
      _merge(config.evals.jacobian, study.jacobian.to_dict(), "evals.jacobian.")
    jacobian_compare.analyze_workdirs(config, workdirs)
  logging.info("study finished in %.0f s: %s", time.time() - t0, root)


# --------------------------------------------------------------------------------------------
# The pilot (docs/study_plan.md, "Regime").
# --------------------------------------------------------------------------------------------

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
  print("| candidate | train_size | epochs | best val PGD after decay | end val | end train | "
        "drop | gap | overfits |")
  print("|---|---|---|---|---|---|---|---|---|")
  for name, c in choice["candidates"].items():
    print(f"| {name} | {c['train_size']} | {c['epochs']:g} | {c['best_after_decay']:.3f} | "
          f"{c['end_val']:.3f} | {c['end_train']:.3f} | {c['drop']:.3f} | {c['gap']:.3f} | "
          f"{c['overfits']} |")
  print(f"chosen: {choice['chosen']} (robust overfitting observed: "
        f"{choice['overfitting_observed']})")
  return choice


FLAGS = flags.FLAGS


def _define_flags():  # at the entry point only: report.py imports this module as a library
  config_flags.DEFINE_config_file("study", None, "Study config, e.g. "
                                  "configs/fashion_mnist_study.py or ...:quick", lock_config=True)
  flags.DEFINE_string("root", None, "Directory holding the study's workdirs.")
  flags.mark_flags_as_required(["study", "root"])


def cli_main():
  _define_flags()
  cli.run_app(lambda: run(FLAGS.study, FLAGS.root))


if __name__ == "__main__":
  cli_main()
