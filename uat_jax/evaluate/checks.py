"""Gradient-masking checks: pass/fail verdicts, each with its numbers, computed from a suite's
results (accuracy monotone in eps, PGD below FGSM, margin losses not far below CE, black-box not
beating white-box, eps 0 = clean, near 0% at a very large eps, more steps not helping, few
vanishing gradients)."""

from __future__ import annotations

from typing import Any

WHITE_BOX, BLACK_BOX = "white-box", "black-box"  # the kinds of attack, which the checks compare
TOLERANCE = 0.005  # accuracy slack in the checks (sampling noise of random starts)
BLACK_BOX_GAP = 0.01  # a black-box attack breaking more than this beyond white-box: masking
LARGE_EPS = 0.5  # L-inf: every image can be moved to mid-grey; accuracy should be near 0
ZERO_GRAD = 1e-10  # max |d CE / d x| below this: the input gradient has vanished
SATURATED = 1e-6  # max |d CE / d logits| = max |softmax - onehot| below this: saturated softmax


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
                            f"eps {k}: {drop[k]:.3f} of the points" for k in eps_keys)
                        + f" broken beyond the white-box attacks (fails above "
                          f"{BLACK_BOX_GAP:.3f})"))
  return out
