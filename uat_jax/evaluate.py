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
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
import time
from typing import Any, Callable, Optional, Sequence, Union

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from uat_jax import attacks, config_lib, data, losses, models, sharding, train
from uat_jax.errors import UatError

WHITE_BOX, BLACK_BOX = "white-box", "black-box"
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
TOLERANCE = 0.005  # accuracy slack in the checks (sampling noise of random starts)
BLACK_BOX_GAP = 0.01  # a black-box attack breaking more than this beyond white-box: masking
LARGE_EPS = 0.5  # L-inf: every image can be moved to mid-grey; accuracy should be near 0
ZERO_GRAD = 1e-10  # max |d CE / d x| below this: the input gradient has vanished
SATURATED = 1e-6  # max |d CE / d logits| = max |softmax - onehot| below this: saturated softmax


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
# Resumable per-(attack, eps) results.
# --------------------------------------------------------------------------------------------

def write_atomic(path: str, payload: Union[str, bytes]) -> None:
  """Writes a file under a temporary name, then renames it: readers never see half a file. On
  several hosts only process 0 writes (the workdir is on a filesystem they share)."""
  if not sharding.is_chief():
    return
  tmp = f"{path}.tmp-{os.getpid()}"
  with open(tmp, "wb") as f:
    f.write(payload.encode() if isinstance(payload, str) else payload)
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, path)


def pyplot():
  """matplotlib.pyplot on the Agg backend: figures go to files, no display is needed."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  return plt


def save_figure(fig, path: str) -> None:
  """Lays out a matplotlib figure, writes it to `path` as PNG (atomically, creating the
  directory) and closes it."""
  buf = io.BytesIO()
  fig.tight_layout()
  fig.savefig(buf, format="png")
  pyplot().close(fig)
  if sharding.is_chief():
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  write_atomic(path, buf.getvalue())


class ResultStore:
  """Per-example results of finished (attack, eps) pairs as .npy files in `directory`, keyed by a
  hash of everything they depend on (`fingerprint`: checkpoint, examples, seed; the entry; the
  earlier entries under only_robust). A killed evaluation rerun finds and skips them."""

  def __init__(self, directory: str, fingerprint: dict[str, Any]):
    self.directory = directory
    self.fingerprint = fingerprint
    if sharding.is_chief():
      os.makedirs(directory, exist_ok=True)

  def _path(self, name: str, key: dict[str, Any]) -> str:
    blob = json.dumps({"fingerprint": self.fingerprint, **key}, sort_keys=True, default=str)
    digest = hashlib.sha1(blob.encode()).hexdigest()[:12]
    return os.path.join(self.directory, f"{re.sub(r'[^A-Za-z0-9.]+', '_', name)}-{digest}.npy")

  def get(self, name: str, key: dict[str, Any]) -> Optional[np.ndarray]:
    path = self._path(name, key)
    if not os.path.exists(path):
      return None
    try:
      return np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:  # a damaged file: recompute it
      logging.warning("ignoring unreadable evaluation state %s (%s)", path, e)
      return None

  def put(self, name: str, key: dict[str, Any], value: np.ndarray) -> None:
    buf = io.BytesIO()
    np.save(buf, np.asarray(value), allow_pickle=False)
    write_atomic(self._path(name, key), buf.getvalue())


def _cached(store: Optional[ResultStore], name: str, key: dict[str, Any],
            compute: Callable[[], np.ndarray]) -> np.ndarray:
  if store is None:
    return compute()
  value = store.get(name, key)
  if value is None:
    value = compute()
    store.put(name, key, value)
  else:
    logging.info("%s: loaded the finished result from %s", name, store.directory)
  return value


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


def _check(name: str, passed: bool, detail: str) -> dict[str, Any]:
  return {"name": name, "passed": bool(passed), "detail": detail}


def masking_checks(result: dict[str, Any]) -> list[dict]:
  """Pass/fail checks for gradient masking, each with its numbers."""
  checks = []
  eps_keys = [str(e) for e in result["eps"]]
  runs = result["attacks"]
  own = {name: r["accuracy"] for name, r in runs.items() if "accuracy" in r}
  for name, per_eps in own.items():
    seq = [per_eps[k] for k in eps_keys]
    checks.append(_check(f"{name}: accuracy non-increasing in eps",
                         all(b <= a + TOLERANCE for a, b in zip(seq, seq[1:])),
                         " -> ".join(f"{v:.3f}" for v in seq)))
  worst = [result["worst_case"]["accuracy"][k] for k in eps_keys]
  checks.append(_check("worst case non-increasing in eps",
                       all(b <= a + TOLERANCE for a, b in zip(worst, worst[1:])),
                       " -> ".join(f"{v:.3f}" for v in worst)))
  cfg = {name: r["config"] for name, r in runs.items()}
  fgsm = [n for n in own if cfg[n]["attack"] == "fgsm"]
  pgd_ce = [n for n in own if cfg[n]["attack"] == "pgd" and cfg[n]["loss"] == "ce"
            and cfg[n]["temperature"] == 1.0]
  for f in fgsm:
    for p in pgd_ce:
      bad = [k for k in eps_keys if own[p][k] > own[f][k] + TOLERANCE]
      checks.append(_check(f"{p} <= {f}", not bad,
                           "; ".join(f"eps {k}: {own[p][k]:.3f} vs {own[f][k]:.3f}"
                                     for k in eps_keys)))
  margin = [n for n in own if cfg[n]["attack"] == "pgd" and cfg[n]["loss"] in ("cw", "dlr")]
  for p in pgd_ce:
    for m in margin:
      gap = max(own[p][k] - own[m][k] for k in eps_keys)
      checks.append(_check(f"{m} not far below {p} (CE gradients not masked)", gap <= 0.1,
                           f"largest gap {gap:.3f} (fails above 0.100)"))
  checks.extend(_black_box_checks(result, eps_keys, own))
  extra = result["extra"]
  if "eps0_accuracy" in extra:
    checks.append(_check("eps = 0 equals clean accuracy",
                         abs(extra["eps0_accuracy"] - result["clean_accuracy"]) <= 1e-9,
                         f"{extra['eps0_accuracy']:.3f} vs clean {result['clean_accuracy']:.3f}"))
  if "large_eps_accuracy" in extra:
    checks.append(_check(f"near 0% at eps {LARGE_EPS}", extra["large_eps_accuracy"] <= 0.1,
                         f"{extra['large_eps_accuracy']:.3f} (fails above 0.100)"))
  if "more_steps" in extra:
    m = extra["more_steps"]
    checks.append(_check("more steps and restarts do not raise accuracy",
                         m["accuracy"] <= m["baseline"] + TOLERANCE,
                         f"{m['name']} {m['accuracy']:.3f} vs {m['baseline']:.3f} at eps {m['eps']}"))
  if "zero_gradient_fraction" in extra:
    z = extra["zero_gradient_fraction"]
    checks.append(_check("few examples with vanishing gradients", z <= 0.01,
                         f"{z:.3f} of examples (fails above 0.010)"))
  return checks


def _black_box_checks(result, eps_keys, own) -> list[dict]:
  """Black-box attacks (no gradients of the target) must not beat white-box ones: where they do,
  the white-box gradients were misleading."""
  runs = result["attacks"]
  names = list(runs)
  white = [n for n in own if runs[n]["kind"] == WHITE_BOX]
  out = []
  for pos, name in enumerate(names):
    if runs[name]["kind"] != BLACK_BOX:
      continue
    if name in own and white:
      best = {k: min(own[w][k] for w in white) for k in eps_keys}
      bad = [k for k in eps_keys if own[name][k] < best[k] - TOLERANCE]
      out.append(_check(f"black-box {name} >= white-box", not bad, "; ".join(
          f"eps {k}: {own[name][k]:.3f} vs {best[k]:.3f}" for k in eps_keys)))
    elif any(runs[m]["kind"] == WHITE_BOX for m in names[:pos]):
      before = runs[names[pos - 1]]["cumulative"]
      drop = {k: before[k] - runs[name]["cumulative"][k] for k in eps_keys}
      out.append(_check(f"black-box {name} breaks few points white-box attacks missed",
                        max(drop.values()) <= BLACK_BOX_GAP, "; ".join(
                            f"eps {k}: -{drop[k]:.3f}" for k in eps_keys)
                        + f" (fails above {BLACK_BOX_GAP:.3f})"))
  return out


# --------------------------------------------------------------------------------------------
# Reports.
# --------------------------------------------------------------------------------------------

def format_table(result: dict[str, Any]) -> str:
  """Markdown: robust accuracy per attack, the cumulative worst case, and the checks."""
  keys = [str(e) for e in result["eps"]]
  head = " | " + " | ".join(f"eps {float(k):.4g}" for k in keys) + " |"
  rule = "|---" * (len(keys) + 2) + "|"
  lines = [f"Clean accuracy {result['clean_accuracy']:.4f} on {result['num_examples']} examples"
           + (" (each attack on the points still robust)" if result.get("only_robust") else ""),
           "", "| attack | kind" + head, rule]
  for name, r in result["attacks"].items():
    own = r.get("accuracy")
    lines.append(f"| {name} | {r['kind']} | " + " | ".join(
        f"{own[k]:.4f}" if own else f"({r['cumulative'][k]:.4f})" for k in keys) + " |")
  lines.append("| **worst case** | all | " + " | ".join(
      f"**{result['worst_case']['accuracy'][k]:.4f}**" for k in keys) + " |")
  if result.get("only_robust"):
    lines.append("")
    lines.append("Values in parentheses: worst case after that attack (it ran only on the points "
                 "every earlier attack failed on).")
  for s in result.get("skipped", []):
    lines.append(f"- skipped {s['name']}: {s['reason']}")
  if result.get("checks"):
    lines += ["", "Gradient-masking checks:", ""]
    for c in result["checks"]:
      lines.append(f"- [{'pass' if c['passed'] else 'FAIL'}] {c['name']}: {c['detail']}")
  return "\n".join(lines)


def format_csv(result: dict[str, Any]) -> str:
  """One row per (attack, eps): own accuracy (empty when undefined), cumulative, points attacked."""
  buf = io.StringIO()
  w = csv.writer(buf, lineterminator="\n")
  w.writerow(["attack", "kind", "eps", "accuracy", "cumulative_accuracy", "attacked"])
  for k in map(str, result["eps"]):
    w.writerow(["clean", "", 0.0, result["clean_accuracy"], result["clean_accuracy"],
                result["num_examples"]])
    for name, r in result["attacks"].items():
      own = r.get("accuracy", {}).get(k, "")
      w.writerow([name, r["kind"], k, own, r["cumulative"][k], r["attacked"][k]])
    acc = result["worst_case"]["accuracy"][k]
    w.writerow(["worst case", "", k, acc, acc, result["num_examples"]])
  return buf.getvalue()


def plot(result: dict[str, Any], path: str, title: str = "") -> None:
  """Robust accuracy vs eps (PNG): each attack (its own accuracy, or its cumulative worst case
  under only_robust) and the worst case, from the clean accuracy at eps 0."""
  plt = pyplot()
  eps = [0.0] + result["eps"]
  fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
  for name, r in result["attacks"].items():
    values = r.get("accuracy") or r["cumulative"]
    label = name if "accuracy" in r else f"{name} (cumulative)"
    ax.plot(eps, [result["clean_accuracy"]] + [values[str(e)] for e in result["eps"]],
            marker="o", ms=3, label=label)
  ax.plot(eps, [result["clean_accuracy"]] + [result["worst_case"]["accuracy"][str(e)]
                                            for e in result["eps"]],
          "k--", marker="s", ms=3, label="worst case")
  ax.set_xlabel("eps")
  ax.set_ylabel("robust accuracy")
  ax.set_ylim(0, 1)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=7)
  ax.set_title(title or f"{result['num_examples']} examples", fontsize=9)
  save_figure(fig, path)


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


def write_reports(result: dict[str, Any], out_dir: str) -> None:
  """results.json, results.csv, results.md, masking_checks.md, accuracy_vs_eps.png (atomic)."""
  if sharding.is_chief():
    os.makedirs(out_dir, exist_ok=True)
  title = (f"{result.get('method', '')} {result.get('model', '')} on {result.get('dataset', '')}"
           f", step {result.get('checkpoint_step', '?')}, preset {result.get('preset') or '-'}")
  write_atomic(os.path.join(out_dir, "results.json"), json.dumps(result, indent=2))
  write_atomic(os.path.join(out_dir, "results.csv"), format_csv(result))
  write_atomic(os.path.join(out_dir, "results.md"), f"# {title}\n\n{format_table(result)}\n")
  checks = result.get("checks", [])
  failed = [c for c in checks if not c["passed"]]
  report = [f"# Gradient-masking checks: {title}", "",
            f"{len(checks) - len(failed)} of {len(checks)} passed." + (
                " Failures mean the numbers above may overestimate robustness: rerun with "
                "stronger attacks (presets strong, adaptive)." if failed else ""), ""]
  report += [f"- [{'pass' if c['passed'] else 'FAIL'}] {c['name']}: {c['detail']}"
             for c in checks]
  write_atomic(os.path.join(out_dir, "masking_checks.md"), "\n".join(report) + "\n")
  plot(result, os.path.join(out_dir, "accuracy_vs_eps.png"), title)
