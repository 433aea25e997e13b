"""The PyTorch loop a user would otherwise run: the same models as uat_jax.models and a
Madry/Rice-style PGD-K adversarial-training step (eager PyTorch, CPU), for bench/at_step_bench.py.

Architectures are uat_jax.interop.torch_models, which match uat_jax.models layer for layer (NCHW
there, NHWC in JAX); the step matches uat_jax.train.train_step for method "at": random start, K
signed-gradient steps projected to the eps-ball and [0, 1] with batch norm in train mode, then
one Adam/SGD update on the adversarial batch and a clean forward for the clean-accuracy metric.
"""

import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from uat_jax.interop import torch_models  # noqa: E402


# The models are uat_jax.interop's PyTorch twins of uat_jax.models (identity normalization).
MODELS = {"madry_cnn": torch_models.MadryCNN, "small_cnn": torch_models.SmallCNN,
          "preact_resnet18": torch_models.PreActResNet18}


def at_step(model, opt, x, y, *, eps, alpha, steps):
  """One PGD-K AT step (x in [0, 1], NCHW). Returns the loss."""
  model.train()
  delta = (torch.rand_like(x) * 2 - 1) * eps
  delta = (x + delta).clamp(0, 1) - x
  for _ in range(steps):
    delta.requires_grad_(True)
    loss = F.cross_entropy(model(x + delta), y)
    (g,) = torch.autograd.grad(loss, [delta])
    delta = (delta.detach() + alpha * g.sign()).clamp(-eps, eps)
    delta = (x + delta).clamp(0, 1) - x
  opt.zero_grad(set_to_none=True)
  logits = model(x + delta)
  loss = F.cross_entropy(logits, y)
  loss.backward()
  opt.step()
  with torch.no_grad():  # the clean accuracy our step reports too
    model(x)
  return loss.item()


def standard_step(model, opt, x, y):
  model.train()
  opt.zero_grad(set_to_none=True)
  loss = F.cross_entropy(model(x), y)
  loss.backward()
  opt.step()
  return loss.item()
