"""The PyTorch loop a user would otherwise run: the same models as uat_jax.models and a
Madry/Rice-style PGD-K adversarial-training step (eager PyTorch, CPU), for bench/at_step_bench.py.

Architectures match uat_jax.models layer for layer (NCHW here, NHWC there); the step matches
uat_jax.train.train_step for method "at": random start, K signed-gradient steps projected to the
eps-ball and [0, 1] with batch norm in train mode, then one Adam/SGD update on the adversarial batch
and a clean forward for the clean-accuracy metric.
"""

import torch
import torch.nn.functional as F
from torch import nn


class MadryCNN(nn.Module):
  def __init__(self, in_ch=1, num_classes=10):
    super().__init__()
    self.c1 = nn.Conv2d(in_ch, 32, 5, padding=2)
    self.c2 = nn.Conv2d(32, 64, 5, padding=2)
    self.f1 = nn.Linear(7 * 7 * 64, 1024)
    self.f2 = nn.Linear(1024, num_classes)

  def forward(self, x):
    x = F.max_pool2d(F.relu(self.c1(x)), 2)
    x = F.max_pool2d(F.relu(self.c2(x)), 2)
    return self.f2(F.relu(self.f1(x.flatten(1))))


class SmallCNN(nn.Module):
  def __init__(self, in_ch=1, num_classes=10, width=16):
    super().__init__()
    self.c1 = nn.Conv2d(in_ch, width, 3, padding=1)
    self.c2 = nn.Conv2d(width, 2 * width, 3, padding=1)
    self.f1 = nn.Linear(7 * 7 * 2 * width, 8 * width)
    self.f2 = nn.Linear(8 * width, num_classes)

  def forward(self, x):
    x = F.max_pool2d(F.relu(self.c1(x)), 2)
    x = F.max_pool2d(F.relu(self.c2(x)), 2)
    return self.f2(F.relu(self.f1(x.flatten(1))))


class PreActBlock(nn.Module):
  def __init__(self, in_planes, planes, stride=1):
    super().__init__()
    self.bn1 = nn.BatchNorm2d(in_planes)
    self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
    self.bn2 = nn.BatchNorm2d(planes)
    self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
    self.shortcut = (nn.Conv2d(in_planes, planes, 1, stride, bias=False)
                     if stride != 1 or in_planes != planes else None)

  def forward(self, x):
    out = F.relu(self.bn1(x))
    shortcut = self.shortcut(out) if self.shortcut is not None else x
    out = self.conv1(out)
    out = self.conv2(F.relu(self.bn2(out)))
    return out + shortcut


class PreActResNet18(nn.Module):
  def __init__(self, num_classes=10):
    super().__init__()
    self.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
    layers, in_planes = [], 64
    for i, planes in enumerate((64, 128, 256, 512)):
      for j in range(2):
        layers.append(PreActBlock(in_planes, planes, 2 if (i > 0 and j == 0) else 1))
        in_planes = planes
    self.layers = nn.Sequential(*layers)
    self.bn = nn.BatchNorm2d(512)
    self.linear = nn.Linear(512, num_classes)

  def forward(self, x):
    out = F.relu(self.bn(self.layers(self.conv1(x))))
    return self.linear(out.mean((2, 3)))


MODELS = {"madry_cnn": MadryCNN, "small_cnn": SmallCNN, "preact_resnet18": PreActResNet18}


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
