"""Evaluators: what runs on a model during training and on a checkpoint in --mode=evaluate.

Built from config as big_vision's are: every instance `config.evals.<name>` names its `type`
(below), and a config can hold any number of instances of a type (two suites with different
presets, say). An evaluator has a `name`, an `every_steps` period (0: not during training) and
`run(logits_fn, step, mesh) -> {scalar name: value}`, where
logits_fn is the model in inference mode (a jax.tree_util.Partial over its variables, so the
evaluator's compiled programs take the parameters as arguments and compile once per run). The
training loop (train.train_and_evaluate) calls each at its period and logs its scalars;
`evaluate_workdir` (--mode=evaluate) runs those named in config.evals.on_evaluate on a checkpoint
and writes their results. Every evaluator batches through uat_jax.batching (padded, sharded over
the mesh's devices).

  pgd       clean and PGD accuracy at the training eps, mean predictive entropy
  suite     the attack suite of uat_jax.evaluate with gradient-masking checks
  jacobian  mean input-Jacobian norms on clean points (<name>/<output>/<norm>, <name>/loss_grad)

Scalars are logged under the instance's name (config.scalar_prefix: the default pgd instance
logs under eval/).

During training each reads the evaluation split (data.eval_examples): the held-out validation
examples when config.data.validation_size > 0 (model selection), else the test split. On a
checkpoint (`evaluate_workdir`) they read config.evals.split: the test split by default.
"""

from __future__ import annotations

import functools
import os
from typing import Any, Optional, Protocol

import jax
import jax.numpy as jnp
from absl import logging

from uat_jax import (attacks, classifier, data, evaluate, files, jacobian, lock, losses,
                     sharding, tables, validation)
from uat_jax import config as config_lib
from uat_jax.batching import Batches


def examples(config, num_examples: int, split: Optional[str]):
  """The first num_examples examples an evaluator reads: of the evaluation split during training
  (split None: data.eval_examples), else of the named split (data.images)."""
  if split is None:
    return data.eval_examples(config.data, num_examples)
  return data.images(config.data, split, num_examples)


def split_name(config, split: Optional[str]) -> str:
  """What `examples` reads, for reports: "test" or "validation (N held-out train examples)"."""
  return "test" if split == "test" else data.eval_split_name(config.data)


class Evaluator(Protocol):
  name: str
  every_steps: int

  def run(self, logits_fn, step: int, mesh) -> dict[str, float]:
    ...


# --------------------------------------------------------------------------------------------
# pgd: the training-time robustness check.
# --------------------------------------------------------------------------------------------

def _pgd_sums(f, x, y, mask, key, *, eps, steps, step_size, unroll):
  """Sums over one padded batch: clean and PGD correct, predictive entropy, count."""
  logits = f(x)
  x_adv = attacks.pgd(f, x, y, key=key, eps=eps, step_size=step_size, steps=steps, unroll=unroll)
  return {"correct": jnp.sum(losses.accuracy(logits, y) * mask),
          "pgd_correct": jnp.sum(losses.accuracy(f(x_adv), y) * mask),
          "entropy": jnp.sum(losses.entropy(logits) * mask), "count": jnp.sum(mask)}


class PgdEvaluator:
  """Clean accuracy, PGD accuracy at the training eps (attack.eps, evals.pgd.steps and
  step_size, random start) and mean predictive entropy; the same points every time."""
  def __init__(self, config, name: str = "pgd", split: Optional[str] = None,
               out_dir: Optional[str] = None):
    del out_dir  # its scalars are its result
    self.config, self.name, self.split = config, name, split
    self.prefix = config_lib.scalar_prefix(name, "pgd")
    e = config.evals[name]
    self.every_steps = e.every_steps
    self._sums = jax.jit(functools.partial(_pgd_sums, eps=config.attack.eps, steps=e.steps,
                                           step_size=e.step_size, unroll=config.attack.unroll))

  def run(self, logits_fn, step: int, mesh) -> dict[str, float]:
    del step
    e = self.config.evals[self.name]
    x, y = examples(self.config, e.num_examples, self.split)
    key = jax.random.fold_in(jax.random.PRNGKey(self.config.seed), 0x5EED)
    sums = None
    for i, _, b in Batches({"x": x, "y": y}, e.batch_size, mesh)():
      out = self._sums(logits_fn, b["x"], b["y"], b["mask"], jax.random.fold_in(key, i))
      sums = out if sums is None else jax.tree.map(jnp.add, sums, out)
    sums = jax.device_get(sums)
    n = float(sums["count"])
    p = self.prefix
    return {f"{p}/clean_accuracy": float(sums["correct"]) / n,
            f"{p}/pgd_accuracy": float(sums["pgd_correct"]) / n,
            f"{p}/mean_entropy": float(sums["entropy"]) / n, f"{p}/num_examples": int(n)}


def format_summary(config, results: dict[str, Any]) -> str:
  """The pgd evaluator's last scalars as a Markdown table (what training prints at the end)."""
  e = config.evals.pgd
  rows = [("clean accuracy", results["eval/clean_accuracy"]),
          (f"PGD-{e.steps} accuracy (eps={config.attack.eps:.4g})", results["eval/pgd_accuracy"]),
          ("mean predictive entropy (nats)", results["eval/mean_entropy"])]
  return (f"{config.data.name} / {config.model.name} / {config.method}: "
          f"{results['eval/num_examples']} {data.eval_split_name(config.data)} examples\n"
          + tables.markdown_table(["metric", "value"], [[n, f"{v:.4f}"] for n, v in rows],
                                  aligned=True))


# --------------------------------------------------------------------------------------------
# suite: the attack suite.
# --------------------------------------------------------------------------------------------

class SuiteEvaluator:
  """The attack suite of config.evals.suite (uat_jax.evaluate.run_suite). During training it
  logs suite/clean_accuracy and suite/worst_case@<eps>; with `out_dir` (--mode=evaluate) it also
  keeps finished (attack, eps) results under out_dir/state (a rerun resumes) and writes the
  reports there. `last` is the last SuiteResult."""
  def __init__(self, config, name: str = "suite", split: Optional[str] = None,
               out_dir: Optional[str] = None):
    self.config, self.name, self.out_dir, self.split = config, name, out_dir, split
    self.prefix = config_lib.scalar_prefix(name, "suite")
    self.every_steps = config.evals[name].every_steps
    self.last: Optional[evaluate.SuiteResult] = None
    self._surrogates: Optional[dict] = None

  def eps(self) -> tuple[float, ...]:
    s = self.config.evals[self.name]
    return tuple(s.eps) or data.get_spec(self.config.data.name).eps_grid

  def surrogates(self, mesh) -> tuple[dict, Optional[int]]:
    s = self.config.evals[self.name]
    if not s.surrogate_workdir:
      return {}, None
    if self._surrogates is None:
      # The surrogate's checkpoint of the same kind (best or last) as the one evaluated.
      kind = validation.evaluated_step(self.config)
      surrogate = classifier.load(s.surrogate_workdir, kind if isinstance(kind, str) else None,
                                  mesh=mesh)
      self._surrogates = {"surrogate": surrogate.logits_fn, "step": surrogate.step}
    return {"surrogate": self._surrogates["surrogate"]}, self._surrogates["step"]

  def run(self, logits_fn, step: int, mesh) -> dict[str, float]:
    s, config = self.config.evals[self.name], self.config
    x, y = examples(config, s.num_examples, self.split)
    entries = evaluate.suite_entries(s)
    only_robust = s.only_robust if s.only_robust is not None else (
        evaluate.PRESETS[s.preset]["only_robust"] if s.preset else False)
    surrogates, surrogate_step = self.surrogates(mesh)
    store = None
    if self.out_dir:
      fingerprint = {"checkpoint_step": step, "dataset": config.data.name,
                     "model": config.model.name, "num_examples": len(y), "seed": s.seed,
                     "batch_size": s.batch_size,
                     "surrogate": [os.path.abspath(s.surrogate_workdir), surrogate_step]
                     if s.surrogate_workdir else None}
      if split_name(config, self.split) != "test":
        fingerprint["split"] = split_name(config, self.split)
      store = evaluate.ResultStore(os.path.join(self.out_dir, "state"), fingerprint)
    eps = self.eps()
    logging.info("Attack suite at step %d on %d %s examples: %s, eps %s%s", step, len(y),
                 config.data.name, [e.get("name", e["attack"]) for e in entries],
                 [round(e, 4) for e in eps], " (only still-robust points)" if only_robust else "")
    result = evaluate.run_suite(
        logits_fn, x, y, entries, jax.random.PRNGKey(s.seed), eps=eps, batch_size=s.batch_size,
        checks=s.checks, only_robust=only_robust, surrogates=surrogates,
        objective=losses.per_example_objective(config), mesh=mesh, store=store)
    result.info["provenance"].update(seed=s.seed, training_seed=config.seed)
    result.info.update({"checkpoint_step": step, "method": config.method,
                        "dataset": config.data.name, "model": config.model.name,
                        "preset": s.preset, "split": split_name(config, self.split),
                        "surrogate_workdir": s.surrogate_workdir or None})
    self.last = result
    scalars = {f"{self.prefix}/clean_accuracy": result.clean_accuracy}
    scalars.update({f"{self.prefix}/worst_case@{e:.4g}": v
                    for e, v in result.worst_case_accuracy.items()})
    return scalars


# --------------------------------------------------------------------------------------------
# jacobian: norms over training.
# --------------------------------------------------------------------------------------------

class JacobianEvaluator:
  """Mean input-Jacobian norms (config.evals.jacobian: outputs, norms, power iterations) on the
  first num_examples clean points of the evaluation split."""
  def __init__(self, config, name: str = "jacobian", split: Optional[str] = None,
               out_dir: Optional[str] = None):
    del out_dir  # its scalars are its result
    self.config, self.name, self.split = config, name, split
    self.prefix = config_lib.scalar_prefix(name, "jacobian")
    self.every_steps = config.evals[name].every_steps

  def run(self, logits_fn, step: int, mesh) -> dict[str, float]:
    del step
    j = self.config.evals[self.name]
    x, y = examples(self.config, j.num_examples, self.split)
    scalars = {}
    for output in j.outputs:
      norms = jacobian.jacobian_norms(logits_fn, x, y, output=output, norms=tuple(j.norms),
                                      chunk_size=j.chunk_size, power_iters=j.power_iters,
                                      key=jax.random.PRNGKey(j.seed), mesh=mesh)
      scalars[f"{self.prefix}/loss_grad"] = float(norms.pop("loss_grad").mean())
      scalars.update({f"{self.prefix}/{output}/{k}": float(v.mean()) for k, v in norms.items()})
    return scalars


EVALUATORS = {"pgd": PgdEvaluator, "suite": SuiteEvaluator, "jacobian": JacobianEvaluator}


def build(config, name: str, split: Optional[str] = None, out_dir: Optional[str] = None):
  """The evaluator of instance config.evals.<name>, of the class its `type` names."""
  return EVALUATORS[config.evals[name].type](config, name, split, out_dir)


def for_training(config) -> list[Evaluator]:
  """The evaluator instances of config.evals that run during training (every_steps > 0)."""
  return [build(config, name) for name, e in config_lib.evaluators(config).items()
          if e.every_steps > 0]


# --------------------------------------------------------------------------------------------
# --mode=evaluate: evaluators on a checkpoint.
# --------------------------------------------------------------------------------------------

def evaluate_workdir(config, workdir: str, num_devices: Optional[int] = None,
                     step: classifier.Step = None,
                     names: Optional[tuple[str, ...]] = None) -> dict[str, Any]:
  """Runs the evaluator instances `names` (default config.evals.on_evaluate) on a checkpoint of
  `workdir` (config.evals.checkpoint: last, best or a step; `step` overrides it) on
  config.evals.split (the test split by default) and writes, holding the lock of the directory
  it writes to (uat_jax.lock), under <workdir or evals.output_dir>/eval/: each suite's
  results.json, results.csv, results.md, masking_checks.md and accuracy_vs_eps.png in
  eval/<its output>/ (finished (attack, eps) results are kept under state/ there, so a rerun
  after a kill resumes), and each other instance's scalars in eval/<name>.json. Returns
  {"suites": {name: SuiteResult.to_json()}, "scalars": {name: value} of all of them}."""
  mesh = sharding.make_mesh(num_devices)
  validation.validate(config, mesh.devices.size)
  step = validation.evaluated_step(config) if step is None else step
  names = config_lib.names(config.evals.on_evaluate) if names is None else tuple(names)
  base = config.evals.output_dir or workdir
  holder = lock.holder(base)  # before restoring: a workdir that is training is refused at once
  if holder:
    raise lock.InUse(base, holder, fix=(
        "wait for it to finish, or evaluate it meanwhile with --config.evals.output_dir=DIR "
        "(the checkpoints are only read)" if base == workdir else None))
  clf = classifier.load(workdir, step, config, mesh)  # reads only: a bad workdir stays as is
  with lock.lock(base, "evaluation", fix=lock.OUTPUT_DIR_FIX):  # fails before any attack
    return _evaluate_locked(config, workdir, base, mesh, step, clf, names)


def output_dir(config, name: str, base: str) -> str:
  """Where instance `name` writes: <base>/eval/<output>/ for a suite, <base>/eval/ else."""
  e = config.evals[name]
  return os.path.join(base, "eval", e.output) if e.type == "suite" else os.path.join(base, "eval")


def _evaluate_locked(config, workdir: str, base: str, mesh, step, clf, names) -> dict[str, Any]:
  found = clf.step
  logging.info("Evaluating %s (step %d, %s) with %s", workdir, found, config.method, names)
  out: dict[str, Any] = {"suites": {}, "scalars": {}}
  split = config.evals.split
  for name in names:
    out_dir = output_dir(config, name, base)
    ev = build(config, name, split, out_dir)
    scalars = ev.run(clf.logits_fn, found, mesh)
    out["scalars"].update(scalars)
    if isinstance(ev, SuiteEvaluator):
      result = ev.last.to_json()
      result["workdir"] = os.path.abspath(workdir)
      result["checkpoint"] = str(step)
      evaluate.write_reports(result, out_dir)
      out["suites"][name] = result
    else:
      files.write_json(os.path.join(out_dir, f"{name}.json"),
                       {"workdir": os.path.abspath(workdir), "checkpoint_step": found,
                        "split": split_name(config, split), **scalars})
  return out
