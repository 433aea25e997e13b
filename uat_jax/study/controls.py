"""The study's Jacobian pieces: per-example input-Jacobian norms of a run's best checkpoint, and
the temperature-matched control (the baseline's logits divided by the T at which its mean
predictive entropy equals a regularized method's: how much of a Jacobian ratio logit scale
alone explains). Both written in uat_jax.jacobian's one layout."""

from __future__ import annotations

import math

import jax
import numpy as np
from absl import logging

from uat_jax import classifier, data, jacobian, losses
from uat_jax.errors import UatError
from uat_jax.study import spec


def mean_entropy(logits: np.ndarray, temperature: float = 1.0) -> float:
  """Mean predictive entropy (nats) of softmax(logits / T)."""
  return float(np.mean(losses.entropy(jax.numpy.asarray(logits) / temperature)))


def matching_temperature(logits: np.ndarray, target: float, low: float = 1e-2,
                         high: float = 1e2, iters: int = 60) -> float:
  """The T at which the mean entropy of softmax(logits / T) equals `target` (bisection on
  log T: the entropy rises with T, from 0 towards log K)."""
  lo, hi = math.log(low), math.log(high)
  if not mean_entropy(logits, low) <= target <= mean_entropy(logits, high):
    raise UatError(f"no temperature in [{low}, {high}] gives mean entropy {target:.4f}")
  for _ in range(iters):
    mid = 0.5 * (lo + hi)
    if mean_entropy(logits, math.exp(mid)) < target:
      lo = mid
    else:
      hi = mid
  return math.exp(0.5 * (lo + hi))


def _scaled(logits_fn, temperature: float):
  return jax.tree_util.Partial(lambda f, t, x: f(x) / t, logits_fn, temperature)


def _norms(study, logits_fn, config) -> dict[str, dict[str, np.ndarray]]:
  j = study.jacobian
  x, y = data.images(config.data, "test", j.num_examples)
  out = jacobian.analyze(logits_fn, x, y, outputs=tuple(j.outputs), norms=tuple(j.norms),
                         power_iters=j.power_iters)
  return out


def best_checkpoint_norms(study, root: str, run: spec.Run) -> None:
  """Per-example Jacobian norms of the run's best checkpoint on the first test images
  (W/eval/jacobian/)."""
  w = spec.run_dir(root, run)
  clf = classifier.load(w, "best", run.config)
  logging.info("Jacobian norms of %s (best checkpoint, step %d)", w, clf.step)
  jacobian.save(spec.jacobian_dir(w), _norms(study, clf.logits_fn, run.config),
                {"checkpoint_step": clf.step, "method": run.method, "seed": run.seed})


def temperature_control(study, root: str, base: spec.Run, other: spec.Run) -> None:
  """The baseline run's logits divided by the T that matches `other`'s mean predictive entropy
  on the first validation images (same seed), and that model's Jacobian norms
  (W/eval/jacobian_T_<other's method>/ in the baseline's workdir)."""
  wb = spec.run_dir(root, base)
  clf = classifier.load(wb, "best", base.config)
  target_clf = classifier.load(spec.run_dir(root, other), "best", other.config)
  xv, _ = clf.validation_images(study.jacobian.temperature_examples)
  base_logits = np.asarray(clf.logits_fn(xv))
  target = mean_entropy(np.asarray(target_clf.logits_fn(xv)))
  t = matching_temperature(base_logits, target)
  logging.info("temperature control: %s / %.3f matches %s's mean entropy %.4f", wb, t,
               other.name, target)
  jacobian.save(spec.jacobian_dir(wb, other.method),
                _norms(study, _scaled(clf.logits_fn, t), base.config),
                {"checkpoint_step": clf.step, "method": base.method, "seed": base.seed,
                 "temperature": t, "matched": other.method, "target_entropy": target,
                 "entropy_before": mean_entropy(base_logits)})
