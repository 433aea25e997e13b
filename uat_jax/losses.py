"""Losses: cross entropy, label smoothing, entropy maximization, and the training objective.

Definitions (docs/paper.md), all from log_softmax so they stay finite for saturated logits:
  H(p)        = -sum_k p_k log p_k                                     (`entropy`)
  CE_alpha    = -sum_k t_k log p_k,  t = (1 - alpha) onehot(y) + alpha / K   (`cross_entropy`)
  EntM        = CE - beta * H(p)                                       (Pereyra et al. 2017)

The training objective (`objective`) is written as a task term plus a regularizer term so that the
regularizer can see other outputs than the task term (config.regularizer.on):
  loss = w * CE(z_task, y) + R(z_reg)
  none: w = 1,         R = 0
  entm: w = 1,         R(z) = -beta * H(softmax z)
  ls:   w = 1 - alpha, R(z) = alpha * U(z),  U(z) = -(1/K) sum_k log p_k (CE against uniform)
z_task is the adversarial output under AT and the clean output otherwise; z_reg is the
adversarial output, the clean output, or both (R averaged). With z_reg = z_task the objective is
exactly CE - beta H (EntM) and the label-smoothed CE (LS).
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from uat_jax.errors import UatError

REGULARIZERS = ("none", "entm", "ls")
REGULARIZER_ON = ("adversarial", "clean", "both")


def entropy(logits: jax.Array) -> jax.Array:
  """Per-example predictive entropy H(softmax(logits)) in nats, computed from log_softmax."""
  logp = jax.nn.log_softmax(logits, axis=-1)
  return -jnp.sum(jnp.exp(logp) * logp, axis=-1)


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """Per-example cross entropy -log softmax(logits)[label]. (Label smoothing is
  (1 - alpha) * cross_entropy + alpha * uniform_cross_entropy: see objective.)"""
  logp = jax.nn.log_softmax(logits, axis=-1)
  return -jnp.take_along_axis(logp, labels[..., None].astype(jnp.int32), axis=-1)[..., 0]


def uniform_cross_entropy(logits: jax.Array) -> jax.Array:
  """Per-example cross entropy against the uniform distribution, -(1/K) sum_k log p_k."""
  return -jnp.mean(jax.nn.log_softmax(logits, axis=-1), axis=-1)


def accuracy(logits: jax.Array, labels: jax.Array) -> jax.Array:
  return (jnp.argmax(logits, axis=-1) == labels).astype(jnp.float32)


# method -> (adversarial training?, regularizer kind)
METHODS = {
    "standard": (False, "none"),
    "entm": (False, "entm"),
    "ls": (False, "ls"),
    "at": (True, "none"),
    "at_entm": (True, "entm"),
    "at_ls": (True, "ls"),
}


def method_parts(method: str) -> tuple[bool, str]:
  """(uses adversarial training, regularizer kind) for a method name."""
  if method not in METHODS:
    raise UatError(f"unknown method {method!r}: choose one of {list(METHODS)} (--config.method)")
  return METHODS[method]


def _regularizer_parts(kind: str, reg_config) -> tuple[float, Callable[[jax.Array], jax.Array]]:
  """(weight of the task CE, per-example regularizer R(logits)) for a regularizer kind."""
  if kind == "none":
    return 1.0, lambda z: jnp.zeros(z.shape[:-1], z.dtype)
  if kind == "entm":
    return 1.0, lambda z: -reg_config.beta * entropy(z)
  if kind == "ls":
    return 1.0 - reg_config.alpha, lambda z: reg_config.alpha * uniform_cross_entropy(z)
  raise UatError(f"unknown regularizer {kind!r}: choose one of {REGULARIZERS}")


def per_example_objective(config):
  """`f(logits, labels) -> [B]`: the method's regularized loss with task term and regularizer on
  the same outputs (CE - beta H, or label-smoothed CE). The inner attack maximizes this when
  config.attack.loss == "objective"."""
  w, reg = _regularizer_parts(method_parts(config.method)[1], config.regularizer)
  return lambda logits, labels: w * cross_entropy(logits, labels) + reg(logits)


def objective(config):
  """Builds the training loss `loss(logits, labels, clean_logits=None) -> (scalar, metrics)`.

  `logits` are the outputs the task term is computed on (adversarial under AT, else clean);
  `clean_logits` are given when the regularizer sees clean outputs under AT
  (config.regularizer.on = "clean" or "both").
  """
  on = config.regularizer.on
  if on not in REGULARIZER_ON:
    raise UatError(f"unknown regularizer.on {on!r}: choose one of {REGULARIZER_ON} "
                   "(--config.regularizer.on)")
  w, reg = _regularizer_parts(method_parts(config.method)[1], config.regularizer)

  def loss(logits, labels, clean_logits=None):
    ce = cross_entropy(logits, labels)
    if clean_logits is None or on == "adversarial":
      r = reg(logits)
    elif on == "clean":
      r = reg(clean_logits)
    else:
      r = 0.5 * (reg(logits) + reg(clean_logits))
    total = jnp.mean(w * ce + r)
    metrics = {"loss": total, "ce": jnp.mean(ce), "entropy": jnp.mean(entropy(logits)),
               "regularizer": jnp.mean(r)}
    return total, metrics

  return loss
