"""Square attack (Andriushchenko et al. 2020), L-inf: score-based random search, no gradients."""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp

from uat_jax.attacks.common import (LogitsFn, check_eps, check_inputs, default_key, margin_loss,
                                    project_linf, where_example)
from uat_jax.errors import UatError


def _square_fraction(p_init: float, i: jax.Array, iterations: int) -> jax.Array:
  """Square attack's schedule of the window area fraction: p_init halved at fixed points of a
  10,000-iteration run, rescaled to `iterations` (Andriushchenko et al. 2020)."""
  at = (i * 10000) // max(iterations, 1)
  halvings = sum((at > t).astype(jnp.int32)
                 for t in (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000))
  return p_init / (2.0 ** halvings)


def _margin_fn(logits_fn, y):
  return lambda xa: -margin_loss(logits_fn(xa), y)  # > 0 while correctly classified


def square_start(logits_fn: LogitsFn, x: jax.Array, y: jax.Array, *, key: jax.Array,
                 eps) -> tuple[jax.Array, jax.Array]:
  """Square's starting point (vertical stripes of +-eps) and its margin z_y - max_{j != y} z_j
  per example (> 0 while correctly classified): one forward pass."""
  b, _, w, c = x.shape
  stripes = eps * jax.random.rademacher(key, (b, 1, w, c), jnp.float32)
  x_best = project_linf(x + stripes, x, eps)
  return x_best, _margin_fn(logits_fn, y)(x_best)


def square_steps(logits_fn: LogitsFn, x: jax.Array, y: jax.Array, x_best: jax.Array,
                 m_best: jax.Array, *, key: jax.Array, eps, start, stop, iterations: int,
                 p_init: float = 0.8, flip_unchanged: bool = True
                 ) -> tuple[jax.Array, jax.Array]:
  """Iterations start..stop-1 (traced bounds: one program for every segment) of a Square run
  of `iterations` iterations, from (x_best, m_best); returns them updated. The window schedule
  depends on the iteration's index in the whole run, so a run cut into segments (and, between
  segments, restricted to the still-robust examples: see uat_jax.evaluate) follows the same
  schedule as one uninterrupted run. flip_unchanged: see `square`."""
  b, h, w, c = x.shape
  margin = _margin_fn(logits_fn, y)
  rows = jnp.arange(h)[None, :, None, None]
  cols = jnp.arange(w)[None, None, :, None]

  def step(i, carry):
    x_best, m_best = carry
    k_h, k_w, k_v = jax.random.split(jax.random.fold_in(key, i), 3)
    p = _square_fraction(p_init, i, iterations)
    side = jnp.clip(jnp.round(jnp.sqrt(p * h * w)), 1, max(min(h, w) - 1, 1)).astype(jnp.int32)
    top = jax.random.randint(k_h, (b, 1, 1, 1), 0, h - side + 1)
    left = jax.random.randint(k_w, (b, 1, 1, 1), 0, w - side + 1)
    window = (rows >= top) & (rows < top + side) & (cols >= left) & (cols < left + side)
    values = eps * jax.random.rademacher(k_v, (b, 1, 1, c), jnp.float32)
    delta = x_best - x

    def propose(v):
      return project_linf(x + jnp.where(window, v, delta), x, eps)

    cand = propose(values)
    if flip_unchanged:  # never waste a query
      unchanged = jnp.all(cand == x_best, axis=(1, 2, 3))
      cand = where_example(unchanged, propose(-values), cand)
    m = margin(cand)
    accept = (m < m_best) & (m_best > 0)
    return where_example(accept, cand, x_best), jnp.where(accept, m, m_best)

  return jax.lax.fori_loop(start, stop, step, (x_best, m_best))


def square(logits_fn: LogitsFn, x: jax.Array, y: jax.Array, *, eps: float,
           key: Optional[jax.Array] = None, queries: int = 5000, p_init: float = 0.8,
           flip_unchanged: bool = True) -> jax.Array:
  """Square attack, L-inf (Andriushchenko et al. 2020): score-based random search, no gradients.

  Starts from vertical stripes of +-eps, then per query proposes, inside one random square window
  per example (side shrinking on a schedule), a fresh +-eps value per channel, and keeps it if it
  lowers the margin z_y - max_{j != y} z_j. Examples stop once misclassified. Uses `queries`
  forward passes per example (1 for the start). (The suite runs it in segments on the
  still-robust examples only: square_start and square_steps.)

  flip_unchanged: a proposal that leaves the image unchanged (its window already carries the
  drawn signs) is replaced by the opposite signs, as the authors' reference implementation
  redraws it. False spends the query on it, as AutoAttack's PyTorch implementation and
  torchattacks do (on one-channel images about a quarter of the proposals at a few hundred
  queries): only to reproduce their numbers.
  """
  key = default_key(key)
  check_eps(eps)
  x, y = check_inputs(x, y)
  if queries < 1:
    raise UatError(f"Square needs queries >= 1, got {queries}")
  x = jnp.asarray(x, jnp.float32)
  k0, key = jax.random.split(key)
  x_best, m_best = square_start(logits_fn, x, y, key=k0, eps=eps)
  return square_steps(logits_fn, x, y, x_best, m_best, key=key, eps=eps, start=0,
                      stop=queries - 1, iterations=queries - 1, p_init=p_init,
                      flip_unchanged=flip_unchanged)[0]

