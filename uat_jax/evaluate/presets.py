"""The attacks a suite can run and the named suites: ATTACKS (each attack's kind and parameters
with defaults), PRESETS (quick, paper, strong, adaptive), NAMED (attacks picked one by one) and
`entry`, which completes and checks one suite entry."""

from __future__ import annotations

from typing import Any, Sequence

from uat_jax import attacks
from uat_jax import config as config_lib
from uat_jax.errors import UatError
from uat_jax.evaluate.checks import BLACK_BOX, WHITE_BOX

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

# Attacks by name, for picking them one by one (--config.evals.suite.select=apgd_ce,apgd_dlr).
NAMED: dict[str, dict[str, Any]] = {
    "fgsm": {"name": "FGSM", "attack": "fgsm"},
    "pgd20": {"name": "PGD-20", "attack": "pgd", "steps": 20},
    "pgd100": {"name": "PGD-100", "attack": "pgd", "steps": 100},
    "cw20": {"name": "CW-20", "attack": "pgd", "steps": 20, "loss": "cw"},
    "cw100": {"name": "CW-100", "attack": "pgd", "steps": 100, "loss": "cw"},
    "apgd_ce": {"name": "APGD-CE", "attack": "apgd", "steps": 100},
    # Model selection during training (the study grids' validation attack).
    "apgd_ce20": {"name": "APGD-CE-20", "attack": "apgd", "steps": 20},
    "apgd_dlr": {"name": "APGD-DLR", "attack": "apgd", "steps": 100, "loss": "dlr"},
    "apgd_t": {"name": "APGD-T", "attack": "apgd_t", "steps": 100, "num_targets": 9},
    "fab_t": {"name": "FAB-T", "attack": "fab_t", "steps": 100, "num_targets": 9},
    "square": {"name": "Square-5000", "attack": "square", "queries": 5000},
    "spsa": {"name": "SPSA-100", "attack": "spsa", "steps": 100},
    "transfer": {"name": "Transfer-PGD-20", "attack": "transfer", "steps": 20},
    "pgd_objective": {"name": "PGD-100-objective", "attack": "pgd", "steps": 100,
                      "loss": "objective"},
    "pgd_sharp": {"name": "PGD-100-T0.1", "attack": "pgd", "steps": 100, "temperature": 0.1},
}


FORWARD_COST = 1 / 3  # a forward pass, in gradient passes (a backward pass costs about two)


def passes(e: dict[str, Any]) -> float:
  """Gradient passes (a forward and a backward pass) one suite entry spends on one image at one
  eps at most (attacks that stop on broken points spend less); a forward pass alone counts a
  third of one (Square's queries, SPSA's directions, two per direction), FAB-T two per step and
  target (the gradients of two logits). PGD-100 counts 100, SPSA-100 with 128 samples 8,533.
  For the suite's ETA of attacks not yet timed and the studies' evaluation cost."""
  e = entry(e)
  a = e["attack"]
  if a == "fgsm":
    return 1.0
  if a in ("pgd", "apgd", "transfer"):
    return float(e["steps"] * e["restarts"])
  if a == "apgd_t":
    return float(e["steps"] * e["num_targets"])
  if a == "fab_t":
    return float(2 * e["steps"] * e["num_targets"] * e["restarts"])
  if a == "square":
    return e["queries"] * FORWARD_COST
  if a == "spsa":
    return 2 * e["steps"] * e["samples"] * FORWARD_COST
  raise UatError(f"no cost model for attack {a!r}")


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


def suite_entries(s) -> list[dict]:
  """The attack entries a suite evaluator instance (config.evals.<name> of type suite) asks
  for: the preset's, the `select`ed ones, then its `attacks`."""
  entries = preset(s.preset) if s.preset else []
  entries += named(config_lib.names(s.select))
  for name, entry in s.attacks.items():
    entries.append({"name": name, **entry.to_dict()})
  return entries
