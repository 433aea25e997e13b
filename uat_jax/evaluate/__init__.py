"""Robustness evaluation: an attack suite over an eps sweep, worst case per example, and
gradient-masking checks. Works on any JAX classifier given as `logits_fn(x) -> logits`.

    result = run_suite(logits_fn, x, y, "quick", key, eps=[0.05, 0.1, 0.2])

A suite is a preset name (PRESETS) or a list of attack entries (dicts): `attack` (a key of
ATTACKS), an optional `name`, and that attack's parameters (ATTACKS[attack]["params"] lists them
with their defaults). Attacks run in order at every eps. The worst case keeps, per example and
eps, whether any attack so far succeeded. With `only_robust` (AutoAttack's way, the `strong`
preset's default) each attack runs only on the points every earlier attack failed on, which is
cheaper but leaves an attack's own accuracy undefined; otherwise every attack runs on every point
and the report has each attack's own and the cumulative accuracy.

`evaluate_workdir` is the CLI's `--mode=evaluate`: it restores a workdir's newest checkpoint and
writes eval/results.json, results.csv, results.md and accuracy_vs_eps.png, saving each finished
(attack, eps) under eval/state so that a killed evaluation resumes where it stopped.

The package: this module runs suites; `checks` holds the gradient-masking checks and their
thresholds, `files` what an evaluation writes (both re-exported here).
"""

from __future__ import annotations

import os
import time
from typing import Any, Callable, Optional, Sequence, Union

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from uat_jax import attacks, config_lib, data, losses, models, sharding, train
from uat_jax.errors import UatError
from uat_jax.evaluate.checks import (BLACK_BOX, BLACK_BOX_GAP, LARGE_EPS, SATURATED, TOLERANCE,
                                     WHITE_BOX, ZERO_GRAD, masking_checks)
from uat_jax.evaluate.files import (ResultStore, _cached, format_csv, format_table, plot, pyplot,
                                    save_figure, write_atomic, write_reports)

# attack -> its kind and its parameters with defaults. `step_size_rel` is the step size as a
# fraction of eps; `temperature` divides the logits before the loss (an adaptive attack);
# `loss` is ce | cw | dlr | objective (the model's own training objective, given to run_suite).
ATTACKS: dict[str, dict[str, Any]] = {
    "fgsm": {"kind": WHITE_BOX, "params": {"loss": "ce", "temperature": 1.0}},
    "pgd": {"kind": WHITE_BOX, "params": {
        "steps": 20, "restarts": 1, "loss": "ce", "norm": "linf", "step_size_rel": 0.25,
        "temperature": 1.0, "random_start": True, "unroll": -1}},
    "apgd": {"kind": WHITE_BOX, "params": {
        "steps": 100, "restarts": 1, "loss": "ce", "norm": "linf", "temperature": 1.0,
        "unroll": -1}},
    "apgd_t": {"kind": WHITE_BOX, "params": {"steps": 100, "num_targets": 9, "norm": "linf",
                                             "unroll": -1}},
    "square": {"kind": BLACK_BOX, "params": {"queries": 5000, "p_init": 0.8}},
    "spsa": {"kind": BLACK_BOX, "params": {"steps": 100, "samples": 128, "delta": 0.01,
                                           "learning_rate": 0.01, "loss": "cw"}},
    # PGD on a surrogate model (run_suite's `surrogates[name]`), fed to the target model.
    "transfer": {"kind": BLACK_BOX, "params": {
        "surrogate": "surrogate", "steps": 20, "restarts": 1, "loss": "ce",
        "step_size_rel": 0.25, "unroll": -1}},
}

PRESETS: dict[str, dict[str, Any]] = {
    "quick": {"only_robust": False, "attacks": [
        {"name": "FGSM", "attack": "fgsm"},
        {"name": "PGD-20", "attack": "pgd", "steps": 20},
        {"name": "CW-20", "attack": "pgd", "steps": 20, "loss": "cw"},
    ]},
    "paper": {"only_robust": False, "attacks": [
        {"name": "FGSM", "attack": "fgsm"},
        {"name": "PGD-20", "attack": "pgd", "steps": 20},
        {"name": "PGD-100", "attack": "pgd", "steps": 100},
        {"name": "CW-100", "attack": "pgd", "steps": 100, "loss": "cw"},
        {"name": "Transfer-PGD-20", "attack": "transfer", "steps": 20},
    ]},
    # AutoAttack's standard sequence (Croce & Hein 2020), on the still-robust points.
    "strong": {"only_robust": True, "attacks": [
        {"name": "APGD-CE", "attack": "apgd", "steps": 100},
        {"name": "APGD-T", "attack": "apgd_t", "steps": 100, "num_targets": 9},
        {"name": "Square-5000", "attack": "square", "queries": 5000},
    ]},
    # Adaptive attacks for EntM/LS models: the margin, sharpened logits, the model's own loss,
    # a scale-invariant loss, and a gradient-free attack.
    "adaptive": {"only_robust": False, "attacks": [
        {"name": "CW-100", "attack": "pgd", "steps": 100, "loss": "cw"},
        {"name": "PGD-100-T0.1", "attack": "pgd", "steps": 100, "temperature": 0.1},
        {"name": "PGD-100-objective", "attack": "pgd", "steps": 100, "loss": "objective"},
        {"name": "APGD-DLR", "attack": "apgd", "steps": 100, "loss": "dlr"},
        {"name": "SPSA-100", "attack": "spsa", "steps": 100},
    ]},
}
DEFAULT_EPS = {
    "mnist": (0.05, 0.1, 0.15, 0.2, 0.3),
    "fashion_mnist": (0.05, 0.1, 0.15, 0.2, 0.3),
    "cifar10": tuple(e / 255 for e in (2, 4, 8, 12, 16)),
    "cifar100": tuple(e / 255 for e in (2, 4, 8, 12, 16)),
    "svhn_cropped": tuple(e / 255 for e in (2, 4, 8, 12, 16)),
}


# --------------------------------------------------------------------------------------------
# Suite entries.
# --------------------------------------------------------------------------------------------

def preset(name: str) -> list[dict[str, Any]]:
  """The attack entries of a preset (a fresh copy)."""
  if name not in PRESETS:
    raise UatError(f"unknown evaluation preset {name!r}: choose one of {sorted(PRESETS)} "
                   "(--config.evals.preset)")
  return [dict(e) for e in PRESETS[name]["attacks"]]


def _entry(e: dict[str, Any]) -> dict[str, Any]:
  """An entry completed with its attack's defaults; unknown attacks or parameters are errors."""
  e = dict(e)
  attack = e.get("attack")
  if attack not in ATTACKS:
    raise UatError(f"unknown attack {attack!r} in suite entry {e}: choose one of {list(ATTACKS)}")
  allowed = ATTACKS[attack]["params"]
  unknown = sorted(set(e) - set(allowed) - {"attack", "name", "kind"})
  if unknown:
    raise UatError(f"unknown parameter(s) {unknown} for attack {attack!r}: it takes "
                   f"{sorted(allowed)}")
  full = {"attack": attack, **allowed, **e}
  if full.get("norm", "linf") not in attacks.NORMS:
    raise UatError(f"unknown norm {full['norm']!r} in suite entry {e}: choose one of "
                   f"{attacks.NORMS}")
  full.setdefault("name", "-".join([attack] + [f"{k}{full[k]}" for k in ("loss", "steps")
                                               if k in full]))
  full["kind"] = ATTACKS[attack]["kind"]
  return full


def _loss(e: dict[str, Any], objective: Optional[Callable]):
  loss = e.get("loss", "ce")
  if loss == "objective":
    if objective is None:
      raise UatError(f"attack {e['name']!r} uses loss 'objective' but no training objective was "
                     "given: pass run_suite(..., objective=losses.per_example_objective(config))")
    loss = objective
  else:
    loss = attacks.resolve_loss(loss)
  t = e.get("temperature", 1.0)
  return loss if t == 1.0 else attacks.temperature_scaled(loss, t)


def make_attack(logits_fn, entry: dict[str, Any], *, surrogates: Optional[dict] = None,
                objective: Optional[Callable] = None) -> Callable:
  """A jitted `f(x, y, key, eps) -> x_adv` for one suite entry (eps traced: no recompiles)."""
  e = _entry(entry)
  a = e["attack"]
  if a == "fgsm":
    loss = _loss(e, objective)
    return models.jit_with_model(logits_fn, lambda f, x, y, key, eps: attacks.fgsm(
        f, x, y, eps=eps, loss=loss))
  if a == "pgd":
    loss = _loss(e, objective)
    return models.jit_with_model(logits_fn, lambda f, x, y, key, eps: attacks.pgd(
        f, x, y, key=key, eps=eps, step_size=e["step_size_rel"] * eps, steps=e["steps"],
        norm=e["norm"], loss=loss, restarts=e["restarts"], random_start=e["random_start"],
        unroll=e["unroll"]))
  if a == "apgd":
    loss = _loss(e, objective)
    return models.jit_with_model(logits_fn, lambda f, x, y, key, eps: attacks.apgd(
        f, x, y, key=key, eps=eps, steps=e["steps"], norm=e["norm"], loss=loss,
        restarts=e["restarts"], unroll=e["unroll"]))
  if a == "apgd_t":
    return models.jit_with_model(logits_fn, lambda f, x, y, key, eps: attacks.apgd_targeted(
        f, x, y, key=key, eps=eps, steps=e["steps"], norm=e["norm"],
        num_targets=e["num_targets"], unroll=e["unroll"]))
  if a == "square":
    return models.jit_with_model(logits_fn, lambda f, x, y, key, eps: attacks.square(
        f, x, y, key=key, eps=eps, queries=e["queries"], p_init=e["p_init"]))
  if a == "spsa":
    loss = _loss(e, objective)
    return models.jit_with_model(logits_fn, lambda f, x, y, key, eps: attacks.spsa(
        f, x, y, key=key, eps=eps, steps=e["steps"], samples=e["samples"], delta=e["delta"],
        learning_rate=e["learning_rate"], loss=loss))
  # transfer: the attack runs on the surrogate only
  surrogate = (surrogates or {}).get(e["surrogate"])
  if surrogate is None:
    raise UatError(f"transfer attack {e['name']!r} needs a surrogate model {e['surrogate']!r}: "
                   "pass run_suite(..., surrogates={name: logits_fn}) or, from the CLI, "
                   "--config.evals.surrogate_workdir=<another workdir>")
  loss = _loss(e, objective)
  return models.jit_with_model(surrogate, lambda f, x, y, key, eps: attacks.transfer(
      f, x, y, key=key, eps=eps, step_size=e["step_size_rel"] * eps, steps=e["steps"],
      loss=loss, restarts=e["restarts"], unroll=e["unroll"]))


# --------------------------------------------------------------------------------------------
# Running attacks over batches.
# --------------------------------------------------------------------------------------------

class _Batches:
  """Fixed-size (padded) batches of chosen examples, placed on the mesh when there is one."""

  def __init__(self, x: np.ndarray, y: np.ndarray, batch_size: int, mesh=None):
    self.x, self.y, self.mesh = x, y, mesh
    n_dev = 1 if mesh is None else mesh.devices.size
    self.batch_size = -(-min(batch_size, len(y)) // n_dev) * n_dev  # a multiple of the devices

  def __call__(self, idx: np.ndarray):
    for i, start in enumerate(range(0, len(idx), self.batch_size)):
      sel = idx[start:start + self.batch_size]
      batch = {"x": data.pad_to(self.x[sel], self.batch_size),
               "y": data.pad_to(self.y[sel], self.batch_size)}
      if self.mesh is not None:
        batch = sharding.shard_batch(batch, self.mesh)
      yield i, sel, batch["x"], batch["y"]


PROGRESS_SECONDS = 30.0  # log within an (attack, eps) at most this often


def _correct(predict, attack_fn, batches: _Batches, idx: np.ndarray, key, eps,
             label: str = "") -> np.ndarray:
  """Per-example correctness under the attack on the examples `idx` (False elsewhere)."""
  out = np.zeros(len(batches.y), bool)
  num_batches = -(-len(idx) // batches.batch_size)
  t0 = last = time.time()
  for i, sel, xb, yb in batches(idx):
    x_adv = attack_fn(xb, yb, jax.random.fold_in(key, i), jnp.float32(eps))
    out[sel] = sharding.to_host(predict(x_adv))[: len(sel)] == batches.y[sel]
    now = time.time()
    if label and now - last > PROGRESS_SECONDS and i + 1 < num_batches:
      last = now
      logging.info("  %s: batch %d/%d, ETA %.0fs", label, i + 1, num_batches,
                   (now - t0) / (i + 1) * (num_batches - i - 1))
  return out


def zero_gradient_fraction(logits_fn, x, y, batch_size: int, mesh=None) -> float:
  """Fraction of examples whose cross-entropy gradient has vanished: the input gradient is below
  ZERO_GRAD, or the softmax is saturated (|p - onehot| < SATURATED), where what is left of the
  gradient is rounding noise of the compiled softmax. A sign of gradient masking."""
  return float(_vanished(logits_fn, _Batches(np.asarray(x, np.float32), np.asarray(y, np.int32),
                                             batch_size, mesh)).mean())


def _vanished(logits_fn, batches: _Batches) -> np.ndarray:
  def vanished(f, v, t):
    logits = f(v)
    g = jax.grad(lambda u: jnp.sum(losses.cross_entropy(f(u), t)))(v)
    dz = jnp.abs(jax.nn.softmax(logits) - jax.nn.one_hot(t, logits.shape[-1])).max(-1)
    return (jnp.abs(g).reshape(g.shape[0], -1).max(-1) < ZERO_GRAD) | (dz < SATURATED)

  fn = models.jit_with_model(logits_fn, vanished)
  out = np.zeros(len(batches.y), bool)
  for _, sel, xb, yb in batches(np.arange(len(batches.y))):
    out[sel] = sharding.to_host(fn(xb, yb))[: len(sel)]
  return out


# --------------------------------------------------------------------------------------------
# The suite.
# --------------------------------------------------------------------------------------------

def _resolve_suite(suite, only_robust: Optional[bool]) -> tuple[list[dict], bool]:
  if isinstance(suite, str):
    entries = preset(suite)
    default = PRESETS[suite]["only_robust"]
  else:
    entries, default = list(suite), False
  entries = [_entry(e) for e in entries]
  if not entries:
    raise UatError("the evaluation suite is empty: choose a preset (--config.evals.preset) or "
                   "add attacks (config.evals.attacks)")
  names = [e["name"] for e in entries]
  if len(set(names)) != len(names):
    raise UatError(f"attack names in a suite must be unique, got {names}")
  norms = {e.get("norm", "linf") for e in entries}
  if len(norms) > 1:
    raise UatError(f"a suite's eps grid is for one norm, but its entries mix {sorted(norms)}: "
                   "evaluate L-inf and L2 attacks in separate suites")
  return entries, default if only_robust is None else bool(only_robust)


def run_suite(logits_fn, x, y, suite: Union[str, Sequence[dict[str, Any]]] = "quick",
              key: Optional[jax.Array] = None, *, eps: Sequence[float] = DEFAULT_EPS["mnist"],
              batch_size: int = 500, checks: bool = True, only_robust: Optional[bool] = None,
              surrogates: Optional[dict[str, Callable]] = None,
              objective: Optional[Callable] = None, mesh=None,
              store: Optional[ResultStore] = None) -> dict[str, Any]:
  """Runs every suite entry at every eps on (x, y); see the module docstring.

  `surrogates` maps names to surrogate logits_fns for transfer entries (entries whose surrogate
  is missing are skipped and listed under "skipped"); `objective(logits, labels) -> [B]` is the
  model's training loss for entries with loss "objective"; `mesh` shards batches over devices;
  `store` makes the run resumable. Returns
  {"num_examples", "clean_accuracy", "eps", "only_robust",
   "attacks": {name: {"config", "kind", "accuracy": {eps: acc} (absent under only_robust except
   for the first attack), "cumulative": {eps: acc}, "attacked": {eps: n}, "seconds"}},
   "worst_case": {"accuracy": {eps: acc}, "cumulative": {name: {eps: acc}}},
   "skipped", "extra", "checks"} with eps keys as strings.
  """
  x, y = np.asarray(x, np.float32), np.asarray(y, np.int32)
  n = len(y)
  if n == 0:
    raise UatError("run_suite needs at least one example")
  if x.ndim != 4 or x.shape[0] != n:
    raise UatError(f"run_suite needs images [N, H, W, C] and N labels, got {x.shape} and {n}")
  if x.min() < 0 or x.max() > 1:
    raise UatError(f"images must be float in [0, 1], got values in [{x.min()}, {x.max()}]")
  key = jax.random.PRNGKey(0) if key is None else key
  entries, only_robust = _resolve_suite(suite, only_robust)
  for e in eps:
    attacks.check_eps(e, entries[0].get("norm", "linf"))
  batches = _Batches(x, y, batch_size, mesh)
  predict = models.jit_with_model(logits_fn, lambda f, v: jnp.argmax(f(v), -1))
  clean = _correct(predict, lambda v, t, k, e: v, batches, np.arange(n), key, 0.0)
  result: dict[str, Any] = {
      "num_examples": n, "clean_accuracy": float(clean.mean()), "eps": [float(e) for e in eps],
      "only_robust": only_robust, "attacks": {}, "skipped": [],
      "worst_case": {"accuracy": {}, "cumulative": {}}, "extra": {}}
  worst = {str(e): clean.copy() for e in eps}
  runnable = []
  for e in entries:
    if e["attack"] == "transfer" and e["surrogate"] not in (surrogates or {}):
      reason = f"no surrogate model {e['surrogate']!r} given"
      logging.warning("skipping %s: %s (set --config.evals.surrogate_workdir)", e["name"], reason)
      result["skipped"].append({"name": e["name"], "reason": reason})
      continue
    runnable.append((e, make_attack(logits_fn, e, surrogates=surrogates, objective=objective)))

  total, done, t0 = len(runnable) * len(eps), 0, time.time()
  history: list[dict] = []  # earlier entries: under only_robust, a result depends on them
  for i, (e, attack_fn) in enumerate(runnable):
    r = {"config": e, "kind": e["kind"], "cumulative": {}, "attacked": {}}
    own = {}
    t_attack = time.time()
    for j, eps_value in enumerate(eps):
      k = str(eps_value)
      idx = np.flatnonzero(worst[k]) if only_robust else np.arange(n)
      store_key = {"entry": e, "eps": k, "only_robust": only_robust,
                   "before": history if only_robust else []}
      robust = _cached(store, f"{e['name']}-eps{k}", store_key, lambda: _correct(
          predict, attack_fn, batches, idx, jax.random.fold_in(key, 1000 * i + j), eps_value,
          f"{e['name']} eps={eps_value:.4g}"))
      robust = robust.astype(bool)
      if not only_robust or i == 0:
        own[k] = float(robust.mean())
      worst[k] &= robust
      r["cumulative"][k] = float(worst[k].mean())
      r["attacked"][k] = int(len(idx))
      done += 1
      eta = (time.time() - t0) / done * (total - done)
      logging.info("%s eps=%.4g: %s%d points attacked, worst case so far %.4f [%d/%d, ETA %.0fs]",
                   e["name"], eps_value, f"accuracy {own[k]:.4f}, " if k in own else "",
                   len(idx), r["cumulative"][k], done, total, eta)
    if own:
      r["accuracy"] = own
    r["seconds"] = round(time.time() - t_attack, 2)
    result["attacks"][e["name"]] = r
    result["worst_case"]["cumulative"][e["name"]] = r["cumulative"]
    history.append(e)
  result["worst_case"]["accuracy"] = {k: float(v.mean()) for k, v in worst.items()}

  if checks:
    result["extra"] = _extra_measurements(logits_fn, entries, runnable, batches, predict, key,
                                          eps, result, store)
    result["checks"] = masking_checks(result)
  return result


def _extra_measurements(logits_fn, entries, runnable, batches, predict, key, eps, result, store):
  """What the masking checks need beyond the suite: eps = 0, a very large eps, a stronger PGD,
  and the fraction of vanishing gradients."""
  n = len(batches.y)
  everything = np.arange(n)
  extra: dict[str, Any] = {}
  own_model = [(e, fn) for e, fn in runnable if e["attack"] != "transfer"]
  if own_model:
    first_entry, first = own_model[0]
    extra["eps0_accuracy"] = float(_cached(
        store, "check-eps0", {"entry": first_entry},
        lambda: _correct(predict, first, batches, everything, key, 0.0)).mean())
  if entries[0].get("norm", "linf") == "linf":
    pgd_entries = [e for e in entries if e["attack"] == "pgd" and e["loss"] != "objective"]
    base = pgd_entries[0] if pgd_entries else _entry({"name": "PGD-20", "attack": "pgd"})
    big = {**base, "steps": max(20, base["steps"])}
    extra["large_eps_accuracy"] = float(_cached(
        store, "check-large-eps", {"entry": big, "eps": LARGE_EPS},
        lambda: _correct(predict, make_attack(logits_fn, big), batches, everything, key,
                         LARGE_EPS)).mean())
    if pgd_entries and "accuracy" in result["attacks"][base["name"]]:
      mid = eps[len(eps) // 2]
      stronger = {**base, "name": f"{base['name']} x2 steps, 2 restarts",
                  "steps": 2 * base["steps"], "restarts": 2 * base["restarts"]}
      acc = float(_cached(
          store, "check-more-steps", {"entry": stronger, "eps": str(mid)},
          lambda: _correct(predict, make_attack(logits_fn, stronger), batches, everything,
                           jax.random.fold_in(key, 7), mid)).mean())
      extra["more_steps"] = {"name": stronger["name"], "eps": mid, "accuracy": acc,
                             "baseline": result["attacks"][base["name"]]["accuracy"][str(mid)]}
  extra["zero_gradient_fraction"] = float(_cached(
      store, "check-zero-gradient", {}, lambda: _vanished(logits_fn, batches)).mean())
  return extra


# --------------------------------------------------------------------------------------------
# Workdirs (the CLI's --mode=evaluate).
# --------------------------------------------------------------------------------------------

def load_classifier(workdir: str, config, mesh=None) -> tuple[jax.tree_util.Partial, int]:
  """(logits_fn, step): the newest checkpoint of a workdir as an eval-mode (running batch-norm
  statistics) float32 classifier over images in [0, 1]. logits_fn is a jax.tree_util.Partial
  holding the parameters, usable as any `logits_fn(x)`."""
  mesh = sharding.make_mesh(1) if mesh is None else mesh
  spec = data.get_spec(config.data.name)
  model = models.create_model(config.model, spec)
  state, step = train.restore_newest(workdir, config, model, spec, mesh)
  variables = {"params": state.params, "batch_stats": state.batch_stats}
  return models.classifier(model, variables), step


def evaluate_workdir(config, workdir: str, num_devices: Optional[int] = None) -> dict[str, Any]:
  """Evaluates the newest checkpoint of `workdir` with the suite config.evals describes and
  writes <workdir>/eval/<evals.output>/: results.json, results.csv, results.md (table and
  masking checks), masking_checks.md and accuracy_vs_eps.png. Finished (attack, eps) results are
  kept under state/, so a rerun after a kill resumes; returns the results dict."""
  mesh = sharding.make_mesh(num_devices)
  config_lib.validate(config, mesh.devices.size)
  ev = config.evals
  split = data.eval_split(config.data)
  n = min(ev.num_examples, len(split)) if ev.num_examples else len(split)
  x = split.images[:n].astype(np.float32) / 255.0
  y = split.labels[:n]
  logits_fn, step = load_classifier(workdir, config, mesh)
  surrogates, surrogate_step = {}, None
  if ev.surrogate_workdir:
    s_config = config_lib.load_workdir_config(ev.surrogate_workdir)
    surrogates["surrogate"], surrogate_step = load_classifier(ev.surrogate_workdir, s_config, mesh)
  entries = config_lib.suite_entries(config)
  only_robust = ev.only_robust if ev.only_robust is not None else (
      PRESETS[ev.preset]["only_robust"] if ev.preset else False)
  eps = tuple(ev.eps) or DEFAULT_EPS[config.data.name]
  out_dir = os.path.join(workdir, "eval", ev.output)
  fingerprint = {"checkpoint_step": step, "dataset": config.data.name, "model": config.model.name,
                 "num_examples": n, "seed": ev.seed, "batch_size": ev.batch_size,
                 "surrogate": [os.path.abspath(ev.surrogate_workdir), surrogate_step]
                 if ev.surrogate_workdir else None}
  split_name = "test"
  if config.data.validation_size > 0:
    split_name = f"validation ({config.data.validation_size} held-out train examples)"
    fingerprint["split"] = split_name
  store = ResultStore(os.path.join(out_dir, "state"), fingerprint)
  logging.info("Evaluating %s (step %d, %s) on %d %s examples: %s, eps %s%s", workdir, step,
               config.method, n, config.data.name, [e["name"] for e in entries],
               [round(e, 4) for e in eps], " (only still-robust points)" if only_robust else "")
  result = run_suite(logits_fn, x, y, entries, jax.random.PRNGKey(ev.seed), eps=eps,
                     batch_size=ev.batch_size, checks=ev.checks, only_robust=only_robust,
                     surrogates=surrogates, objective=losses.per_example_objective(config),
                     mesh=mesh, store=store)
  result.update({"workdir": os.path.abspath(workdir), "checkpoint_step": step,
                 "method": config.method, "dataset": config.data.name,
                 "model": config.model.name, "preset": ev.preset, "split": split_name,
                 "surrogate_workdir": ev.surrogate_workdir or None})
  write_reports(result, out_dir)
  return result
