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

The package: this module runs suites; `presets` holds the attacks and the named suites,
`programs` compiles one entry's attack, `checks` the gradient-masking checks and their thresholds,
`results` the typed SuiteResult, the resumable store and the reports. `__all__` is the public
API.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Optional, Sequence, Union

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from uat_jax import attacks, losses, models, provenance, sharding
from uat_jax.batching import Batches
from uat_jax.errors import UatError
from uat_jax.evaluate.checks import LARGE_EPS, SATURATED, ZERO_GRAD, masking_checks
from uat_jax.evaluate.presets import (ATTACKS, NAMED, PRESETS, entry, named, passes, preset,
                                     suite_entries)
from uat_jax.evaluate import progress as progress_lib
from uat_jax.evaluate.programs import make_attack
from uat_jax.evaluate.results import (AttackResult, ResultStore, SuiteResult, cached,
                                      format_table, write_reports)

# --------------------------------------------------------------------------------------------
# Running attacks over batches.
# --------------------------------------------------------------------------------------------

PROGRESS_SECONDS = 30.0  # log within an (attack, eps) at most this often


def _correct(predict, attack_fn, batches: Batches, idx: np.ndarray, key, eps, label: str = "",
             keep: Optional[np.ndarray] = None,
             on_batch: Optional[Callable[[int, float], None]] = None) -> np.ndarray:
  """Per-example correctness under the attack on the examples `idx` (False elsewhere); with
  `keep` (an array shaped like the images), the adversarial images are written into it;
  `on_batch(points, seconds)` after each batch."""
  y = batches.arrays["y"]
  out = np.zeros(len(y), bool)
  num_batches = batches.num_batches(len(idx))
  t0 = last = time.time()
  for i, sel, b in batches(idx):
    t_batch = time.time()
    x_adv = attack_fn(b["x"], b["y"], jax.random.fold_in(key, i), jnp.float32(eps))
    out[sel] = sharding.to_host(predict(x_adv))[: len(sel)] == y[sel]
    if keep is not None:
      keep[sel] = sharding.to_host(x_adv)[: len(sel)]
    now = time.time()
    if on_batch is not None:
      on_batch(len(sel), now - t_batch)
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


def run_suite(logits_fn, x, y, suite: Union[str, Sequence[dict[str, Any]]] = "quick",
              key: Optional[jax.Array] = None, *, eps: Union[float, Sequence[float]],
              batch_size: int = 500, checks: bool = True, only_robust: Optional[bool] = None,
              surrogates: Optional[dict[str, Callable]] = None,
              objective: Optional[Callable] = None, mesh=None,
              store: Optional[ResultStore] = None,
              return_adversarial: bool = False, progress: Optional[bool] = None) -> SuiteResult:
  """Runs every suite entry at every eps on (x, y); see the module docstring.

  `x`: float images [N, H, W, C] in [0, 1]; `y`: N integer labels; `eps`: a value or a sequence
  on the [0, 1] scale (the dataset's usual grid is `data.get_spec(name).eps_grid`).
  `surrogates` maps names to surrogate logits_fns for transfer entries (entries whose surrogate
  is missing are skipped and listed under `skipped`); `objective(logits, labels) -> [B]` is the
  model's training loss for entries with loss "objective"; `mesh` shards batches over devices;
  `store` makes the run resumable; `return_adversarial` keeps every attack's adversarial images
  (AttackResult.adversarial; it bypasses the store); `progress` shows one bar with the ETA of
  the whole suite (default on; UAT_JAX_PROGRESS=0 turns it off: uat_jax.evaluate.progress).
  Returns a SuiteResult; its `checks` are the gradient-masking checks (with `checks`)."""
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
  result.info["provenance"] = provenance.record(
      threat_model={"norm": entries[0].get("norm", "linf"), "eps": list(grid)},
      key=np.asarray(jax.random.key_data(key)).tolist())
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

  bar = progress_lib.SuiteProgress(
      [(e["name"], v) for e, _ in runnable for v in grid], n, progress_lib.enabled(progress),
      points_for=lambda v: int(result.worst[v].sum()) if only_robust else n,
      passes={e["name"]: passes(e) for e, _ in runnable})
  try:
    _run_entries(runnable, grid, result, bar, predict, batches, key, x, only_robust, store,
                 return_adversarial)
  finally:
    bar.close()

  if checks:
    result.extra = _extra_measurements(logits_fn, entries, runnable, batches, predict, key, grid,
                                       result, store)
    result.checks = masking_checks(result.to_json(masks=False))
  return result


def _run_entries(runnable, grid, result: SuiteResult, bar, predict, batches: Batches, key, x,
                 only_robust: bool, store, return_adversarial: bool) -> None:
  """Runs every (attack, eps) piece in order into `result` (run_suite's loop)."""
  n = result.num_examples
  total, done = len(runnable) * len(grid), 0
  history: list[dict] = []  # earlier entries: under only_robust, a result depends on them
  for i, (e, attack_fn) in enumerate(runnable):
    r = AttackResult(name=e["name"], config=e, kind=e["kind"], robust={}, cumulative={},
                     attacked={}, adversarial={} if return_adversarial else None)
    own = {}
    t_attack = time.time()
    for j, eps_value in enumerate(grid):
      idx = np.flatnonzero(result.worst[eps_value]) if only_robust else np.arange(n)
      store_key = {"entry": e, "eps": str(eps_value), "only_robust": only_robust,
                   "before": history if only_robust else []}
      keep = x.copy() if return_adversarial else None
      bar.start(e["name"], eps_value, len(idx))

      def compute():
        return _correct(predict, attack_fn, batches, idx, jax.random.fold_in(key, 1000 * i + j),
                        eps_value, f"{e['name']} eps={eps_value:.4g}", keep, bar.batch)

      robust = (compute() if return_adversarial else
                cached(store, f"{e['name']}-eps{eps_value}", store_key, compute)).astype(bool)
      bar.finish()
      if keep is not None:
        r.adversarial[eps_value] = keep
      if not only_robust or i == 0:
        own[eps_value] = float(robust.mean())
      r.robust[eps_value] = robust
      result.worst[eps_value] &= robust
      r.cumulative[eps_value] = float(result.worst[eps_value].mean())
      r.attacked[eps_value] = int(len(idx))
      done += 1
      logging.info("%s eps=%.4g: %s%d points attacked, worst case so far %.4f [%d/%d done; "
                   "suite ETA %s]", e["name"], eps_value,
                   f"accuracy {own[eps_value]:.4f}, " if eps_value in own else "", len(idx),
                   r.cumulative[eps_value], done, total, bar.eta_text())
    r.accuracy = own or None
    r.seconds = round(time.time() - t_attack, 2)
    result.attacks[e["name"]] = r
    history.append(e)


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


__all__ = ["ATTACKS", "NAMED", "PRESETS", "AttackResult", "ResultStore", "SuiteResult", "entry",
           "eps_grid", "format_table", "make_attack", "named", "passes", "preset", "resolve_suite",
           "run_suite", "suite_entries", "write_reports", "zero_gradient_fraction"]
