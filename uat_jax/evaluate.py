"""Robustness evaluation: an attack suite over an eps sweep, worst case per example, and
gradient-masking checks. Works on any JAX classifier given as `logits_fn(x) -> logits`.

    result = run_suite(logits_fn, x, y, suite=preset("quick"), key=key, eps=[0.05, 0.1, 0.2])

A suite is a list of attack entries (dicts): `attack` ("fgsm" or "pgd"), and for PGD `steps`,
`restarts`, `loss` ("ce", "cw", "dlr"), `norm`, `step_size_rel` (step size as a fraction of eps).
Attacks run in order; as in AutoAttack, the worst case keeps, per example and eps, whether any
attack so far succeeded, and the report gives each attack's own and the cumulative accuracy.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from uat_jax import attacks, data, losses
from uat_jax.errors import UatError

PRESETS: dict[str, list[dict[str, Any]]] = {
    "quick": [
        {"name": "FGSM", "attack": "fgsm"},
        {"name": "PGD-20", "attack": "pgd", "steps": 20},
        {"name": "CW-20", "attack": "pgd", "steps": 20, "loss": "cw"},
    ],
}
DEFAULT_EPS = {
    "mnist": (0.05, 0.1, 0.15, 0.2, 0.3),
    "fashion_mnist": (0.05, 0.1, 0.15, 0.2, 0.3),
    "cifar10": tuple(e / 255 for e in (2, 4, 8, 12, 16)),
    "cifar100": tuple(e / 255 for e in (2, 4, 8, 12, 16)),
    "svhn_cropped": tuple(e / 255 for e in (2, 4, 8, 12, 16)),
}
ENTRY_DEFAULTS = {"steps": 20, "restarts": 1, "loss": "ce", "norm": "linf", "step_size_rel": 0.25,
                  "unroll": -1}
TOLERANCE = 0.005  # accuracy slack in the checks (sampling noise of random starts)
LARGE_EPS = 0.5  # L-inf: every image can be moved to mid-grey; accuracy should be near 0


def preset(name: str) -> list[dict[str, Any]]:
  if name not in PRESETS:
    raise UatError(f"unknown evaluation preset {name!r}: choose one of {sorted(PRESETS)}")
  return [dict(e) for e in PRESETS[name]]


def _entry(e: dict[str, Any]) -> dict[str, Any]:
  full = {**ENTRY_DEFAULTS, **e}
  if full.get("attack") not in ("fgsm", "pgd"):
    raise UatError(f"unknown attack {full.get('attack')!r} in suite entry {e}: choose fgsm or pgd")
  full.setdefault("name", f"{full['attack']}-{full['loss']}-{full['steps']}")
  return full


def make_attack(logits_fn, entry) -> Callable:
  """A jitted `f(x, y, key, eps) -> x_adv` for one suite entry (eps traced: no recompiles)."""
  e = _entry(entry)
  if e["attack"] == "fgsm":
    return jax.jit(lambda x, y, key, eps: attacks.fgsm(logits_fn, x, y, eps=eps, loss=e["loss"]))
  return jax.jit(lambda x, y, key, eps: attacks.pgd(
      logits_fn, x, y, key=key, eps=eps, step_size=e["step_size_rel"] * eps, steps=e["steps"],
      norm=e["norm"], loss=e["loss"], restarts=e["restarts"], unroll=e["unroll"]))


def _batches(n: int, batch_size: int):
  for start in range(0, n, batch_size):
    yield start, min(start + batch_size, n)


def _robust(predict, attack_fn, x, y, key, eps, batch_size) -> np.ndarray:
  """Per-example correctness under the attack, batched with a padded last batch."""
  out = np.zeros(len(y), bool)
  for i, (a, b) in enumerate(_batches(len(y), batch_size)):
    xb, yb = data.pad_to(x[a:b], batch_size), data.pad_to(y[a:b], batch_size)
    x_adv = attack_fn(xb, yb, jax.random.fold_in(key, i), jnp.float32(eps))
    out[a:b] = np.asarray(predict(x_adv))[: b - a] == y[a:b]
  return out


ZERO_GRAD = 1e-10  # max |d CE / d x| below this: the input gradient has vanished
SATURATED = 1e-6  # max |d CE / d logits| = max |softmax - onehot| below this: saturated softmax


def zero_gradient_fraction(logits_fn, x, y, batch_size: int) -> float:
  """Fraction of examples whose cross-entropy gradient has vanished: the input gradient is below
  ZERO_GRAD, or the softmax is saturated (|p - onehot| < SATURATED), where what is left of the
  gradient is rounding noise of the compiled softmax. A sign of gradient masking."""

  def vanished(v, t):
    logits = logits_fn(v)
    g = jax.grad(lambda u: jnp.sum(losses.cross_entropy(logits_fn(u), t)))(v)
    dz = jnp.abs(jax.nn.softmax(logits) - jax.nn.one_hot(t, logits.shape[-1])).max(-1)
    return (jnp.abs(g).reshape(g.shape[0], -1).max(-1) < ZERO_GRAD) | (dz < SATURATED)

  vanished = jax.jit(vanished)
  out = [np.asarray(vanished(data.pad_to(x[a:b], batch_size), data.pad_to(y[a:b], batch_size)))[: b - a]
         for a, b in _batches(len(y), batch_size)]
  return float(np.concatenate(out).mean())


def _check(name: str, passed: bool, detail: str) -> dict[str, Any]:
  return {"name": name, "passed": bool(passed), "detail": detail}


def masking_checks(result: dict[str, Any]) -> list[dict]:
  """Pass/fail checks for gradient masking, each with its numbers."""
  checks = []
  eps_keys = [str(e) for e in result["eps"]]
  acc = {name: r["accuracy"] for name, r in result["attacks"].items()}
  for name, per_eps in acc.items():
    seq = [per_eps[k] for k in eps_keys]
    ok = all(b <= a + TOLERANCE for a, b in zip(seq, seq[1:]))
    checks.append(_check(f"{name}: accuracy non-increasing in eps", ok,
                         " -> ".join(f"{v:.3f}" for v in seq)))
  entries = [r["config"] for r in result["attacks"].values()]
  fgsm = [e["name"] for e in entries if e["attack"] == "fgsm"]
  pgd_ce = [e["name"] for e in entries if e["attack"] == "pgd" and e["loss"] == "ce"
            and e["norm"] == "linf"]
  for f in fgsm:
    for p in pgd_ce:
      bad = [k for k in eps_keys if acc[p][k] > acc[f][k] + TOLERANCE]
      checks.append(_check(f"{p} <= {f}", not bad,
                           "; ".join(f"eps {k}: {acc[p][k]:.3f} vs {acc[f][k]:.3f}"
                                     for k in eps_keys)))
  margin = [e["name"] for e in entries if e["attack"] == "pgd" and e["loss"] in ("cw", "dlr")]
  for p in pgd_ce:
    for m in margin:
      gap = max(acc[p][k] - acc[m][k] for k in eps_keys)
      checks.append(_check(f"{m} not far below {p} (CE gradients not masked)", gap <= 0.1,
                           f"largest gap {gap:.3f} (fails above 0.100)"))
  extra = result["extra"]
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
  z = extra["zero_gradient_fraction"]
  checks.append(_check("few examples with vanishing gradients", z <= 0.01,
                       f"{z:.3f} of examples (fails above 0.010)"))
  return checks


def run_suite(logits_fn, x, y, suite: Sequence[dict[str, Any]], key: jax.Array, *,
              eps: Sequence[float] = (0.05, 0.1, 0.15, 0.2, 0.3), batch_size: int = 500,
              checks: bool = True) -> dict[str, Any]:
  """Runs every suite entry at every eps on (x, y); see the module docstring.

  Returns {"num_examples", "clean_accuracy", "eps", "attacks": {name: {"accuracy": {eps: acc}}},
  "worst_case": {"accuracy": {eps: acc}, "cumulative": {name: {eps: acc}}}, "extra", "checks"}
  with eps keys as strings.
  """
  x, y = np.asarray(x, np.float32), np.asarray(y, np.int32)
  n = len(y)
  if n == 0:
    raise UatError("run_suite needs at least one example")
  for e in eps:
    attacks.check_eps(e)
  batch_size = min(batch_size, n)
  predict = jax.jit(lambda v: jnp.argmax(logits_fn(v), -1))
  clean = _robust(predict, lambda v, t, k, e: v, x, y, key, 0.0, batch_size)
  result: dict[str, Any] = {"num_examples": n, "clean_accuracy": float(clean.mean()),
                            "eps": [float(e) for e in eps], "attacks": {},
                            "worst_case": {"accuracy": {}, "cumulative": {}}, "extra": {}}
  worst = {str(e): clean.copy() for e in eps}
  entries = [_entry(s) for s in suite]
  attack_fns = [make_attack(logits_fn, e) for e in entries]
  total = len(entries) * len(eps)
  done, t0 = 0, time.time()
  for i, (e, attack_fn) in enumerate(zip(entries, attack_fns)):
    per_eps, cumulative = {}, {}
    for j, eps_value in enumerate(eps):
      robust = _robust(predict, attack_fn, x, y, jax.random.fold_in(key, 1000 * i + j),
                       eps_value, batch_size)
      per_eps[str(eps_value)] = float(robust.mean())
      worst[str(eps_value)] &= robust
      cumulative[str(eps_value)] = float(worst[str(eps_value)].mean())
      done += 1
      eta = (time.time() - t0) / done * (total - done)
      logging.info("%s eps=%.4g: accuracy %.4f (worst case so far %.4f) [%d/%d, ETA %.0fs]",
                   e["name"], eps_value, per_eps[str(eps_value)], cumulative[str(eps_value)],
                   done, total, eta)
    result["attacks"][e["name"]] = {"accuracy": per_eps, "config": e}
    result["worst_case"]["cumulative"][e["name"]] = cumulative
  result["worst_case"]["accuracy"] = {k: float(v.mean()) for k, v in worst.items()}

  if checks:
    extra = result["extra"]
    extra["eps0_accuracy"] = float(
        _robust(predict, attack_fns[0], x, y, key, 0.0, batch_size).mean())
    pgd_entries = [e for e in entries if e["attack"] == "pgd" and e["norm"] == "linf"]
    if pgd_entries:
      base = pgd_entries[0]
      big = make_attack(logits_fn, {**base, "steps": max(20, base["steps"])})
      extra["large_eps_accuracy"] = float(
          _robust(predict, big, x, y, key, LARGE_EPS, batch_size).mean())
      mid = eps[len(eps) // 2]
      stronger = {**base, "name": f"{base['name']} x2 steps, 2 restarts",
                  "steps": 2 * base["steps"], "restarts": 2 * base["restarts"]}
      stronger_acc = float(_robust(predict, make_attack(logits_fn, stronger), x, y,
                                   jax.random.fold_in(key, 7), mid, batch_size).mean())
      extra["more_steps"] = {"name": stronger["name"], "eps": mid, "accuracy": stronger_acc,
                             "baseline": result["attacks"][base["name"]]["accuracy"][str(mid)]}
    extra["zero_gradient_fraction"] = zero_gradient_fraction(logits_fn, x, y, batch_size)
    result["checks"] = masking_checks(result)
  return result


def format_table(result: dict[str, Any]) -> str:
  """A markdown table: rows are attacks (and the worst case), columns eps."""
  keys = [str(e) for e in result["eps"]]
  head = "| attack | " + " | ".join(f"eps {float(k):.4g}" for k in keys) + " |"
  lines = [f"clean accuracy {result['clean_accuracy']:.4f} on {result['num_examples']} examples",
           "", head, "|---" * (len(keys) + 1) + "|"]
  for name, r in result["attacks"].items():
    lines.append(f"| {name} | " + " | ".join(f"{r['accuracy'][k]:.4f}" for k in keys) + " |")
  lines.append("| worst case | " + " | ".join(
      f"{result['worst_case']['accuracy'][k]:.4f}" for k in keys) + " |")
  for c in result.get("checks", []):
    lines.append(f"- [{'pass' if c['passed'] else 'FAIL'}] {c['name']}: {c['detail']}")
  return "\n".join(lines)

