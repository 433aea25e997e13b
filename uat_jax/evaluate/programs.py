"""One suite entry as a compiled attack program: `make_attack` jits the entry's attack with the
model as an argument (one program per entry and shape, shared by every checkpoint), and runs
Square in segments on the points still robust."""

from __future__ import annotations

import json
from typing import Any, Callable, Optional

import jax
import numpy as np

from uat_jax import attacks, models, sharding
from uat_jax.batching import Batches
from uat_jax.errors import UatError
from uat_jax.evaluate.presets import entry


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
