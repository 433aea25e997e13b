"""Any PyTorch classifier as a JAX `logits_fn`: the forward pass through `jax.pure_callback`, and
its input gradient (a custom VJP) through torch autograd, so every gradient attack and the
Jacobian code of uat_jax run on it, jitted or not, at torch's speed (the torch part is not
compiled by XLA). The module runs in eval mode (running batch-norm statistics) on its own
device; images cross as NHWC float32 in [0, 1] here and NCHW there."""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np


def torch_logits_fn(module, num_classes: int, device=None) -> Callable:
  """`logits_fn(x)` for a torch `module` taking NCHW images in [0, 1]: float32 logits of shape
  (batch, num_classes), differentiable in x (reverse mode: grad, vjp, jacrev)."""
  import torch
  module.eval()
  device = device or next((p.device for p in module.parameters()), torch.device("cpu"))

  def to_torch(x, requires_grad=False):
    t = torch.from_numpy(np.array(np.asarray(x, np.float32).transpose(0, 3, 1, 2), copy=True))
    return t.to(device).requires_grad_(requires_grad)

  def forward(x):
    with torch.no_grad():
      return module(to_torch(x)).float().cpu().numpy()

  def input_vjp(x, g):
    t = to_torch(x, requires_grad=True)
    out = module(t).float()
    (grad,) = torch.autograd.grad(out, [t], torch.from_numpy(np.asarray(g, np.float32)).to(device))
    return grad.cpu().numpy().transpose(0, 2, 3, 1)

  @jax.custom_vjp
  def logits_fn(x):
    x = jnp.asarray(x, jnp.float32)
    out = jax.ShapeDtypeStruct((x.shape[0], num_classes), jnp.float32)
    return jax.pure_callback(forward, out, x, vmap_method="sequential")

  def fwd(x):
    return logits_fn(x), x

  def bwd(x, g):
    x = jnp.asarray(x, jnp.float32)
    grad = jax.pure_callback(input_vjp, jax.ShapeDtypeStruct(x.shape, jnp.float32), x, g,
                             vmap_method="sequential")
    return (grad,)

  logits_fn.defvjp(fwd, bwd)
  return logits_fn
