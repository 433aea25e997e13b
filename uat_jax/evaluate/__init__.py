"""Robustness evaluation: an attack suite over an eps sweep, worst case per example, and
gradient-masking checks. Works on any JAX classifier given as `logits_fn(x) -> logits`.

    result = run_suite(logits_fn, x, y, "quick", key, eps=[0.05, 0.1, 0.2])  # a SuiteResult
    result.worst_case_accuracy[0.1], result.attacks["PGD-20"].robust[0.1]   # per-example mask

A suite is a preset name (PRESETS) or a list of attack entries (dicts): `attack` (a key of
ATTACKS), an optional `name`, and that attack's parameters (ATTACKS[attack]["params"] lists them
with their defaults). Attacks run in order at every eps. The worst case keeps, per example and
eps, whether any attack so far succeeded. With `only_robust` (AutoAttack's way, the `strong`
preset's default) each attack runs only on the points every earlier attack failed on, which is
cheaper but leaves an attack's own accuracy undefined; otherwise every attack runs on every point
and the report has each attack's own and the cumulative accuracy.

`uat_jax.evaluators` runs a suite on a workdir's checkpoint (`--mode=evaluate`), resumably.

The package: this module runs suites; `checks` holds the gradient-masking checks and their
thresholds, `results` the typed SuiteResult, the resumable store and the reports (re-exported
here).
"""

from __future__ import annotations

import json
import time
from typing import Any, Callable, Optional, Sequence, Union

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from uat_jax import attacks, losses, models, sharding
from uat_jax.batching import Batches
from uat_jax.errors import UatError
from uat_jax.evaluate.checks import (BLACK_BOX, BLACK_BOX_GAP, LARGE_EPS, SATURATED, TOLERANCE,
                                     WHITE_BOX, ZERO_GRAD, masking_checks)
from uat_jax.evaluate.results import (AttackResult, ResultStore, SuiteResult, cached, format_csv,
                                      format_table, plot, write_reports)

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
    "fab_t": {"kind": WHITE_BOX, "params": {"steps": 100, "num_targets": 9, "restarts": 1}},
    # segment: every this many queries the batch shrinks to the points still robust (0: never).
    "square": {"kind": BLACK_BOX, "params": {"queries": 5000, "p_init": 0.8, "segment": 100}},
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
        {"name": "FAB-T", "attack": "fab_t", "steps": 100, "num_targets": 9},
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

# --------------------------------------------------------------------------------------------
# Suite entries.
# --------------------------------------------------------------------------------------------

# Attacks by name, for picking them one by one (--config.evals.suite.select=apgd_ce,apgd_dlr).
NAMED: dict[str, dict[str, Any]] = {
    "fgsm": {"name": "FGSM", "attack": "fgsm"},
    "pgd20": {"name": "PGD-20", "attack": "pgd", "steps": 20},
    "pgd100": {"name": "PGD-100", "attack": "pgd", "steps": 100},
    "cw20": {"name": "CW-20", "attack": "pgd", "steps": 20, "loss": "cw"},
    "cw100": {"name": "CW-100", "attack": "pgd", "steps": 100, "loss": "cw"},
    "apgd_ce": {"name": "APGD-CE", "attack": "apgd", "steps": 100},
    "apgd_dlr": {"name": "APGD-DLR", "attack": "apgd", "steps": 100, "loss": "dlr"},
    "apgd_t": {"name": "APGD-T", "attack": "apgd_t", "steps": 100, "num_targets": 9},
    "fab_t": {"name": "FAB-T", "attack": "fab_t", "steps": 100, "num_targets": 9},
    "square": {"name": "Square-5000", "attack": "square", "queries": 5000},
    "spsa": {"name": "SPSA-100", "attack": "spsa", "steps": 100},
    "transfer": {"name": "Transfer-PGD-20", "attack": "transfer", "steps": 20},
    "pgd_objective": {"name": "PGD-100-objective", "attack": "pgd", "steps": 100,
                      "loss": "objective"},
}


def preset(name: str) -> list[dict[str, Any]]:
  """The attack entries of a preset (a fresh copy)."""
  if name not in PRESETS:
    raise UatError(f"unknown evaluation preset {name!r}: choose one of {sorted(PRESETS)} "
                   "(--config.evals.suite.preset)")
  return [dict(e) for e in PRESETS[name]["attacks"]]


def named(keys: Sequence[str]) -> list[dict[str, Any]]:
  """The entries of NAMED attacks, e.g. named(["apgd_ce", "apgd_dlr"])."""
  unknown = [k for k in keys if k not in NAMED]
  if unknown:
    raise UatError(f"unknown attack name(s) {unknown}: choose from {sorted(NAMED)} "
                   "(--config.evals.suite.select=apgd_ce,apgd_dlr)")
  return [dict(NAMED[k]) for k in keys]


def entry(e: dict[str, Any]) -> dict[str, Any]:
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


def make_attack(logits_fn, spec: dict[str, Any], *, surrogates: Optional[dict] = None,
                objective: Optional[Callable] = None, mesh=None) -> Callable:
  """A jitted `f(x, y, key, eps) -> x_adv` for one suite entry (eps traced: no recompiles).
  Square with `segment` > 0 runs segment by segment on the points still robust (one process;
  `mesh` places each compacted batch)."""
  e = entry(spec)
  a = e["attack"]
  program = _program_key(e)

  def jit(f, body):
    return models.jit_with_model(f, body, program)

  if a == "fgsm":
    loss = _loss(e, objective)
    return jit(logits_fn, lambda f, x, y, key, eps: attacks.fgsm(f, x, y, eps=eps, loss=loss))
  if a == "pgd":
    loss = _loss(e, objective)
    return jit(logits_fn, lambda f, x, y, key, eps: attacks.pgd(
        f, x, y, key=key, eps=eps, step_size=e["step_size_rel"] * eps, steps=e["steps"],
        norm=e["norm"], loss=loss, restarts=e["restarts"], random_start=e["random_start"],
        unroll=e["unroll"]))
  if a == "apgd":
    loss = _loss(e, objective)
    return jit(logits_fn, lambda f, x, y, key, eps: attacks.apgd(
        f, x, y, key=key, eps=eps, steps=e["steps"], norm=e["norm"], loss=loss,
        restarts=e["restarts"], unroll=e["unroll"]))
  if a == "apgd_t":
    return jit(logits_fn, lambda f, x, y, key, eps: attacks.apgd_targeted(
        f, x, y, key=key, eps=eps, steps=e["steps"], norm=e["norm"],
        num_targets=e["num_targets"], unroll=e["unroll"]))
  if a == "fab_t":
    return jit(logits_fn, lambda f, x, y, key, eps: attacks.fab_targeted(
        f, x, y, key=key, eps=eps, steps=e["steps"], num_targets=e["num_targets"],
        restarts=e["restarts"]))
  if a == "square":
    if e["segment"] > 0 and e["queries"] > 1 and jax.process_count() == 1:
      return _compacted_square(logits_fn, e, mesh)
    return jit(logits_fn, lambda f, x, y, key, eps: attacks.square(
        f, x, y, key=key, eps=eps, queries=e["queries"], p_init=e["p_init"]))
  if a == "spsa":
    loss = _loss(e, objective)
    return jit(logits_fn, lambda f, x, y, key, eps: attacks.spsa(
        f, x, y, key=key, eps=eps, steps=e["steps"], samples=e["samples"], delta=e["delta"],
        learning_rate=e["learning_rate"], loss=loss))
  # transfer: the attack runs on the surrogate only
  surrogate = (surrogates or {}).get(e["surrogate"])
  if surrogate is None:
    raise UatError(f"transfer attack {e['name']!r} needs a surrogate model {e['surrogate']!r}: "
                   "pass run_suite(..., surrogates={name: logits_fn}) or, from the CLI, "
                   "--config.evals.surrogate_workdir=<another workdir>")
  loss = _loss(e, objective)
  return jit(surrogate, lambda f, x, y, key, eps: attacks.transfer(
      f, x, y, key=key, eps=eps, step_size=e["step_size_rel"] * eps, steps=e["steps"],
      loss=loss, restarts=e["restarts"], unroll=e["unroll"]))


def _program_key(e: dict[str, Any]) -> Optional[tuple]:
  """The key under which an entry's jitted attack is kept (models.jit_with_model): the resolved
  entry, which determines the attack's program; None (not kept) for an entry on the model's own
  training objective, which each evaluation builds anew from its config."""
  if e.get("loss") == "objective":
    return None
  return ("attack", json.dumps(e, sort_keys=True, default=repr))


BUCKET_HALVINGS = 4  # a compacted batch runs at batch_size / 2**k, k <= this


def bucket_sizes(batch_size: int, num_devices: int = 1) -> list[int]:
  """The batch sizes a compacted attack runs at: batch_size halved BUCKET_HALVINGS times (not
  below num_devices), each rounded up to a multiple of num_devices: five shapes, five compiled
  programs (each one minutes for a large model on an accelerator), and a batch with fewer
  points left than the smallest still costs at most 1/16 of a full one."""
  round_up = lambda v: -(-v // num_devices) * num_devices
  return sorted({round_up(max(batch_size >> k, 1)) for k in range(BUCKET_HALVINGS + 1)})


def _compacted_square(logits_fn, e: dict[str, Any], mesh) -> Callable:
  """Square on a batch, restricted every `segment` queries to the examples still correctly
  classified (gathered into the smallest bucket that holds them; fooled ones keep their point).
  Same schedule and acceptance rule as attacks.square, so the same distribution of results; the
  random draws per example depend on its row in the bucket, so not the same bits."""
  iterations, segment = e["queries"] - 1, e["segment"]
  start = models.jit_with_model(logits_fn, lambda f, x, y, key, eps: attacks.square_start(
      f, x, y, key=key, eps=eps), ("square_start",))
  steps = models.jit_with_model(
      logits_fn, lambda f, x, y, xb, mb, key, eps, lo, hi: attacks.square_steps(
          f, x, y, xb, mb, key=key, eps=eps, start=lo, stop=hi, iterations=iterations,
          p_init=e["p_init"]), ("square_steps", iterations, e["p_init"]))
  num_devices = 1 if mesh is None else mesh.devices.size

  def run(x, y, key, eps):
    k0, key = jax.random.split(key)
    x_best, m_best = start(x, y, k0, eps)
    xb, mb = np.array(sharding.to_host(x_best)), np.array(sharding.to_host(m_best))
    # Gathered in place of the full batch each segment; padding rows (zeros, margin 0) never
    # accept a proposal.
    arrays = {"x": sharding.to_host(x), "y": sharding.to_host(y), "xb": xb, "mb": mb}
    sizes = bucket_sizes(len(mb), num_devices)
    for lo in range(0, iterations, segment):
      active = np.flatnonzero(mb > 0)
      if not active.size:
        break
      size = next(s for s in sizes if s >= len(active))
      (_, _, part), = Batches(arrays, size, mesh)(active)
      new_x, new_m = steps(part["x"], part["y"], part["xb"], part["mb"], key, eps, np.int32(lo),
                           np.int32(min(lo + segment, iterations)))
      xb[active] = sharding.to_host(new_x)[: len(active)]
      mb[active] = sharding.to_host(new_m)[: len(active)]
    return xb

  return run


# --------------------------------------------------------------------------------------------
# Running attacks over batches.
# --------------------------------------------------------------------------------------------

PROGRESS_SECONDS = 30.0  # log within an (attack, eps) at most this often


def _correct(predict, attack_fn, batches: Batches, idx: np.ndarray, key, eps, label: str = "",
             keep: Optional[np.ndarray] = None) -> np.ndarray:
  """Per-example correctness under the attack on the examples `idx` (False elsewhere); with
  `keep` (an array shaped like the images), the adversarial images are written into it."""
  y = batches.arrays["y"]
  out = np.zeros(len(y), bool)
  num_batches = batches.num_batches(len(idx))
  t0 = last = time.time()
  for i, sel, b in batches(idx):
    x_adv = attack_fn(b["x"], b["y"], jax.random.fold_in(key, i), jnp.float32(eps))
    out[sel] = sharding.to_host(predict(x_adv))[: len(sel)] == y[sel]
    if keep is not None:
      keep[sel] = sharding.to_host(x_adv)[: len(sel)]
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
  x, y = attacks.check_inputs(x, y)
  return float(_vanished(logits_fn, Batches({"x": np.asarray(x), "y": np.asarray(y)},
                                            batch_size, mesh)).mean())


def _vanished(logits_fn, batches: Batches) -> np.ndarray:
  def vanished(f, v, t):
    logits = f(v)
    g = jax.grad(lambda u: jnp.sum(losses.cross_entropy(f(u), t)))(v)
    dz = jnp.abs(jax.nn.softmax(logits) - jax.nn.one_hot(t, logits.shape[-1])).max(-1)
    return (jnp.abs(g).reshape(g.shape[0], -1).max(-1) < ZERO_GRAD) | (dz < SATURATED)

  fn = models.jit_with_model(logits_fn, vanished, ("vanished",))
  out = np.zeros(len(batches), bool)
  for _, sel, b in batches():
    out[sel] = sharding.to_host(fn(b["x"], b["y"]))[: len(sel)]
  return out


# --------------------------------------------------------------------------------------------
# The suite.
# --------------------------------------------------------------------------------------------

def resolve_suite(suite, only_robust: Optional[bool] = None) -> tuple[list[dict], bool]:
  """(complete entries, only_robust) of a preset name or a list of entries; every problem (an
  unknown attack or parameter, duplicate names, mixed norms, an empty suite) is a UatError."""
  if isinstance(suite, str):
    entries = preset(suite)
    default = PRESETS[suite]["only_robust"]
  else:
    entries, default = list(suite), False
  entries = [entry(e) for e in entries]
  if not entries:
    raise UatError("the evaluation suite is empty: choose a preset (--config.evals.suite.preset) "
                   "or add attacks (--config.evals.suite.attacks)")
  names = [e["name"] for e in entries]
  if len(set(names)) != len(names):
    raise UatError(f"attack names in a suite must be unique, got {names}")
  norms = {e.get("norm", "linf") for e in entries}
  if len(norms) > 1:
    raise UatError(f"a suite's eps grid is for one norm, but its entries mix {sorted(norms)}: "
                   "evaluate L-inf and L2 attacks in separate suites")
  return entries, default if only_robust is None else bool(only_robust)


def eps_grid(eps) -> tuple[float, ...]:
  """A scalar eps or a sequence of them as a tuple of floats; an empty grid is an error."""
  values = (eps,) if np.ndim(eps) == 0 else tuple(np.asarray(eps, np.float64).ravel())
  if not values:
    raise UatError("eps is empty: give a value or a sequence, e.g. eps=0.1 or eps=(2/255, 8/255)"
                   "; the dataset's grid is data.get_spec(name).eps_grid")
  return tuple(float(e) for e in values)


def _eta(rate: Optional[float], later_eps, worst, only_robust: bool, n: int,
         later_attacks: int) -> str:
  """The time left, from this attack's measured seconds per attacked point: its remaining eps
  (at most the points still robust there, under only_robust) and the attacks after it, which are
  timed once they run (their cost per point differs by orders of magnitude: FGSM vs Square)."""
  parts = []
  if later_eps and rate is not None:
    points = sum(int(worst[e].sum()) if only_robust else n for e in later_eps)
    parts.append(f"ETA ~{rate * points:.0f}s for this attack")
  if later_attacks:
    parts.append(f"then {later_attacks} attack{'s' if later_attacks > 1 else ''} not yet timed")
  return "; " + ", ".join(parts) if parts else ""


def run_suite(logits_fn, x, y, suite: Union[str, Sequence[dict[str, Any]]] = "quick",
              key: Optional[jax.Array] = None, *, eps: Union[float, Sequence[float]],
              batch_size: int = 500, checks: bool = True, only_robust: Optional[bool] = None,
              surrogates: Optional[dict[str, Callable]] = None,
              objective: Optional[Callable] = None, mesh=None,
              store: Optional[ResultStore] = None,
              return_adversarial: bool = False) -> SuiteResult:
  """Runs every suite entry at every eps on (x, y); see the module docstring.

  `x`: float images [N, H, W, C] in [0, 1]; `y`: N integer labels; `eps`: a value or a sequence
  on the [0, 1] scale (the dataset's usual grid is `data.get_spec(name).eps_grid`).
  `surrogates` maps names to surrogate logits_fns for transfer entries (entries whose surrogate
  is missing are skipped and listed under `skipped`); `objective(logits, labels) -> [B]` is the
  model's training loss for entries with loss "objective"; `mesh` shards batches over devices;
  `store` makes the run resumable; `return_adversarial` keeps every attack's adversarial images
  (AttackResult.adversarial; it bypasses the store). Returns a SuiteResult; its `checks` are the
  gradient-masking checks (with `checks`)."""
  x, y = attacks.check_inputs(x, y)
  x, y = np.asarray(x, np.float32), np.asarray(y, np.int32)
  n = len(y)
  if n == 0:
    raise UatError("run_suite needs at least one example")
  key = jax.random.PRNGKey(0) if key is None else key
  entries, only_robust = resolve_suite(suite, only_robust)
  grid = eps_grid(eps)
  for e in grid:
    attacks.check_eps(e, entries[0].get("norm", "linf"))
  batches = Batches({"x": x, "y": y}, batch_size, mesh)
  predict = models.jit_with_model(logits_fn, lambda f, v: jnp.argmax(f(v), -1), ("argmax",))
  clean = _correct(predict, lambda v, t, k, e: v, batches, np.arange(n), key, 0.0)
  result = SuiteResult(num_examples=n, eps=grid, only_robust=only_robust, clean=clean,
                       attacks={}, worst={e: clean.copy() for e in grid})
  runnable = []
  for e in entries:
    if e["attack"] == "transfer" and e["surrogate"] not in (surrogates or {}):
      reason = f"no surrogate model {e['surrogate']!r} given"
      logging.warning("skipping %s: %s (set --config.evals.suite.surrogate_workdir)", e["name"],
                      reason)
      result.skipped.append({"name": e["name"], "reason": reason})
      continue
    runnable.append((e, make_attack(logits_fn, e, surrogates=surrogates, objective=objective,
                                    mesh=mesh)))

  total, done = len(runnable) * len(grid), 0
  history: list[dict] = []  # earlier entries: under only_robust, a result depends on them
  for i, (e, attack_fn) in enumerate(runnable):
    r = AttackResult(name=e["name"], config=e, kind=e["kind"], robust={}, cumulative={},
                     attacked={}, adversarial={} if return_adversarial else None)
    own = {}
    t_attack = time.time()
    rate = None  # seconds per attacked point of this attack, measured on its computed pieces
    for j, eps_value in enumerate(grid):
      idx = np.flatnonzero(result.worst[eps_value]) if only_robust else np.arange(n)
      store_key = {"entry": e, "eps": str(eps_value), "only_robust": only_robust,
                   "before": history if only_robust else []}
      keep = x.copy() if return_adversarial else None

      def compute():
        return _correct(predict, attack_fn, batches, idx, jax.random.fold_in(key, 1000 * i + j),
                        eps_value, f"{e['name']} eps={eps_value:.4g}", keep)

      t_piece = time.time()
      robust = (compute() if return_adversarial else
                cached(store, f"{e['name']}-eps{eps_value}", store_key, compute)).astype(bool)
      if len(idx) and time.time() - t_piece > 0.05:  # computed, not loaded from the store
        rate = (time.time() - t_piece) / len(idx)
      if keep is not None:
        r.adversarial[eps_value] = keep
      if not only_robust or i == 0:
        own[eps_value] = float(robust.mean())
      r.robust[eps_value] = robust
      result.worst[eps_value] &= robust
      r.cumulative[eps_value] = float(result.worst[eps_value].mean())
      r.attacked[eps_value] = int(len(idx))
      done += 1
      logging.info("%s eps=%.4g: %s%d points attacked, worst case so far %.4f [%d/%d done%s]",
                   e["name"], eps_value,
                   f"accuracy {own[eps_value]:.4f}, " if eps_value in own else "", len(idx),
                   r.cumulative[eps_value], done, total,
                   _eta(rate, grid[j + 1:], result.worst, only_robust, n,
                        len(runnable) - i - 1))
    r.accuracy = own or None
    r.seconds = round(time.time() - t_attack, 2)
    result.attacks[e["name"]] = r
    history.append(e)

  if checks:
    result.extra = _extra_measurements(logits_fn, entries, runnable, batches, predict, key, grid,
                                       result, store)
    result.checks = masking_checks(result.to_json(masks=False))
  return result


def _extra_measurements(logits_fn, entries, runnable, batches, predict, key, grid,
                        result: SuiteResult, store):
  """What the masking checks need beyond the suite: eps = 0, a very large eps, a stronger PGD,
  and the fraction of vanishing gradients."""
  everything = np.arange(len(batches))
  extra: dict[str, Any] = {}
  own_model = [(e, fn) for e, fn in runnable if e["attack"] != "transfer"]
  if own_model:
    first_entry, first = own_model[0]
    extra["eps0_accuracy"] = float(cached(
        store, "check-eps0", {"entry": first_entry},
        lambda: _correct(predict, first, batches, everything, key, 0.0)).mean())
  if entries[0].get("norm", "linf") == "linf":
    pgd_entries = [e for e in entries if e["attack"] == "pgd" and e["loss"] != "objective"]
    base = pgd_entries[0] if pgd_entries else entry({"name": "PGD-20", "attack": "pgd"})
    big = {**base, "steps": max(20, base["steps"])}
    extra["large_eps_accuracy"] = float(cached(
        store, "check-large-eps", {"entry": big, "eps": LARGE_EPS},
        lambda: _correct(predict, make_attack(logits_fn, big), batches, everything, key,
                         LARGE_EPS)).mean())
    base_result = result.attacks.get(base["name"])
    if pgd_entries and base_result is not None and base_result.accuracy is not None:
      mid = grid[len(grid) // 2]
      stronger = {**base, "name": f"{base['name']} x2 steps, 2 restarts",
                  "steps": 2 * base["steps"], "restarts": 2 * base["restarts"]}
      acc = float(cached(
          store, "check-more-steps", {"entry": stronger, "eps": str(mid)},
          lambda: _correct(predict, make_attack(logits_fn, stronger), batches, everything,
                           jax.random.fold_in(key, 7), mid)).mean())
      extra["more_steps"] = {"name": stronger["name"], "eps": mid, "accuracy": acc,
                             "baseline": base_result.accuracy[mid]}
  extra["zero_gradient_fraction"] = float(cached(
      store, "check-zero-gradient", {}, lambda: _vanished(logits_fn, batches)).mean())
  return extra
