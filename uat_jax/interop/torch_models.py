"""PyTorch twins of uat_jax's models (NCHW inputs in [0, 1], normalization inside), named as
the reference implementations name their layers, so a state_dict moves either way:
PreActResNet18 as in Rice et al.'s robust_overfitting (conv1, layer1-4, bn, linear), ResNet18
as in pytorch-cifar and RobustBench (conv1, bn1, layer1-4, linear),
WideResNet as in TRADES and RobustBench (conv1, block1-3.layer, bn1, fc) and DMWideResNet as in
DeepMind's and RobustBench's (init_conv, layer.i.block.j, batchnorm, logits). Imported only
where torch is installed (the `torch` extra)."""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn


class Normalize(nn.Module):
  """(x - mean) / std per channel, as buffers (identity when empty)."""

  def __init__(self, mean: Sequence[float] = (), std: Sequence[float] = ()):
    super().__init__()
    self.enabled = bool(mean)
    self.register_buffer("mean", torch.tensor(list(mean) or [0.0]).view(1, -1, 1, 1))
    self.register_buffer("std", torch.tensor(list(std) or [1.0]).view(1, -1, 1, 1))

  def forward(self, x):
    return (x - self.mean) / self.std if self.enabled else x


class SmallCNN(nn.Module):
  def __init__(self, in_ch=1, num_classes=10, width=16, image_size=28, mean=(), std=()):
    super().__init__()
    self.normalize = Normalize(mean, std)
    self.c1 = nn.Conv2d(in_ch, width, 3, padding=1)
    self.c2 = nn.Conv2d(width, 2 * width, 3, padding=1)
    side = image_size // 4
    self.f1 = nn.Linear(side * side * 2 * width, 8 * width)
    self.f2 = nn.Linear(8 * width, num_classes)

  def forward(self, x):
    x = F.max_pool2d(F.relu(self.c1(self.normalize(x))), 2)
    x = F.max_pool2d(F.relu(self.c2(x)), 2)
    return self.f2(F.relu(self.f1(x.flatten(1))))


class MadryCNN(nn.Module):
  def __init__(self, in_ch=1, num_classes=10, image_size=28, mean=(), std=()):
    super().__init__()
    self.normalize = Normalize(mean, std)
    self.c1 = nn.Conv2d(in_ch, 32, 5, padding=2)
    self.c2 = nn.Conv2d(32, 64, 5, padding=2)
    side = image_size // 4
    self.f1 = nn.Linear(side * side * 64, 1024)
    self.f2 = nn.Linear(1024, num_classes)

  def forward(self, x):
    x = F.max_pool2d(F.relu(self.c1(self.normalize(x))), 2)
    x = F.max_pool2d(F.relu(self.c2(x)), 2)
    return self.f2(F.relu(self.f1(x.flatten(1))))


class PreActBlock(nn.Module):
  """Rice et al.'s pre-activation block: the shortcut convolution sees the pre-activated input."""

  def __init__(self, in_planes, planes, stride=1):
    super().__init__()
    self.bn1 = nn.BatchNorm2d(in_planes)
    self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
    self.bn2 = nn.BatchNorm2d(planes)
    self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
    if stride != 1 or in_planes != planes:
      self.shortcut = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride, bias=False))

  def forward(self, x):
    out = F.relu(self.bn1(x))
    shortcut = self.shortcut(out) if hasattr(self, "shortcut") else x
    out = self.conv1(out)
    out = self.conv2(F.relu(self.bn2(out)))
    return out + shortcut


def _add_stages(module, block) -> None:
  """layer1-4 of a CIFAR ResNet-18: two `block`s a stage, 64 to 512 planes, the first block of
  stages 2-4 strided."""
  in_planes = 64
  for i, planes in enumerate((64, 128, 256, 512)):
    blocks = []
    for j in range(2):
      blocks.append(block(in_planes, planes, 2 if (i > 0 and j == 0) else 1))
      in_planes = planes
    setattr(module, f"layer{i + 1}", nn.Sequential(*blocks))


class PreActResNet18(nn.Module):
  def __init__(self, num_classes=10, mean=(), std=()):
    super().__init__()
    self.normalize = Normalize(mean, std)
    self.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
    _add_stages(self, PreActBlock)
    self.bn = nn.BatchNorm2d(512)
    self.linear = nn.Linear(512, num_classes)

  def forward(self, x):
    out = self.conv1(self.normalize(x))
    out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
    return self.linear(F.relu(self.bn(out)).mean((2, 3)))


class BasicBlock(nn.Module):
  """The TRADES/RobustBench WideResNet block (pre-activation; the 1x1 shortcut convolution sees
  the pre-activated input when the width or stride changes)."""

  def __init__(self, in_planes, out_planes, stride):
    super().__init__()
    self.bn1 = nn.BatchNorm2d(in_planes)
    self.relu1 = nn.ReLU()
    self.conv1 = nn.Conv2d(in_planes, out_planes, 3, stride, 1, bias=False)
    self.bn2 = nn.BatchNorm2d(out_planes)
    self.relu2 = nn.ReLU()
    self.conv2 = nn.Conv2d(out_planes, out_planes, 3, 1, 1, bias=False)
    self.equal = in_planes == out_planes and stride == 1
    self.convShortcut = (None if self.equal else  # noqa: N815 -- the reference's name
                         nn.Conv2d(in_planes, out_planes, 1, stride, 0, bias=False))

  def forward(self, x):
    out = self.relu1(self.bn1(x))
    shortcut = x if self.equal else self.convShortcut(out)
    out = self.conv2(self.relu2(self.bn2(self.conv1(out))))
    return shortcut + out


class NetworkBlock(nn.Module):
  def __init__(self, n, in_planes, out_planes, stride):
    super().__init__()
    self.layer = nn.Sequential(*[BasicBlock(in_planes if i == 0 else out_planes, out_planes,
                                            stride if i == 0 else 1) for i in range(n)])

  def forward(self, x):
    return self.layer(x)


class WideResNet(nn.Module):
  def __init__(self, depth=34, widen_factor=10, num_classes=10, mean=(), std=()):
    super().__init__()
    n = (depth - 4) // 6
    widths = [16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor]
    self.normalize = Normalize(mean, std)
    self.conv1 = nn.Conv2d(3, widths[0], 3, 1, 1, bias=False)
    self.block1 = NetworkBlock(n, widths[0], widths[1], 1)
    self.block2 = NetworkBlock(n, widths[1], widths[2], 2)
    self.block3 = NetworkBlock(n, widths[2], widths[3], 2)
    self.bn1 = nn.BatchNorm2d(widths[3])
    self.relu = nn.ReLU()
    self.fc = nn.Linear(widths[3], num_classes)

  def forward(self, x):
    out = self.block3(self.block2(self.block1(self.conv1(self.normalize(x)))))
    return self.fc(self.relu(self.bn1(out)).mean((2, 3)))


class DMBlock(nn.Module):
  """DeepMind's WideResNet block (Gowal et al. 2020, as RobustBench's DMWideResNet names it):
  pre-activation, the strided convolution padded as TensorFlow's SAME (one row and column after)
  and the 1x1 shortcut on the pre-activated input when the width changes."""

  def __init__(self, in_planes, out_planes, stride, activation):
    super().__init__()
    self.batchnorm_0 = nn.BatchNorm2d(in_planes)
    self.relu_0 = activation()
    self.conv_0 = nn.Conv2d(in_planes, out_planes, 3, stride, 0, bias=False)
    self.batchnorm_1 = nn.BatchNorm2d(out_planes)
    self.relu_1 = activation()
    self.conv_1 = nn.Conv2d(out_planes, out_planes, 3, 1, 1, bias=False)
    self.shortcut = (nn.Conv2d(in_planes, out_planes, 1, stride, 0, bias=False)
                     if in_planes != out_planes else None)
    self.stride = stride

  def forward(self, x):
    out = self.relu_0(self.batchnorm_0(x))
    shortcut = x if self.shortcut is None else self.shortcut(out)
    out = self.conv_0(F.pad(out, (1, 1, 1, 1) if self.stride == 1 else (0, 1, 0, 1)))
    return shortcut + self.conv_1(self.relu_1(self.batchnorm_1(out)))


class DMBlockGroup(nn.Module):
  def __init__(self, n, in_planes, out_planes, stride, activation):
    super().__init__()
    self.block = nn.Sequential(*[DMBlock(in_planes if i == 0 else out_planes, out_planes,
                                         stride if i == 0 else 1, activation)
                                 for i in range(n)])

  def forward(self, x):
    return self.block(x)


class DMWideResNet(nn.Module):
  """DeepMind's WideResNet layout (init_conv, layer.i.block.j, batchnorm, logits; normalization
  buffers `mean` and `std` of shape (C, 1, 1)), with ReLU or Swish (`activation="swish"`)."""

  def __init__(self, depth=28, width=10, num_classes=10, activation="relu",
               mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0)):
    super().__init__()
    act = {"relu": nn.ReLU, "swish": nn.SiLU}[activation]
    n = (depth - 4) // 6
    widths = [16, 16 * width, 32 * width, 64 * width]
    self.register_buffer("mean", torch.tensor(list(mean)).view(-1, 1, 1))
    self.register_buffer("std", torch.tensor(list(std)).view(-1, 1, 1))
    self.init_conv = nn.Conv2d(3, widths[0], 3, 1, 1, bias=False)
    self.layer = nn.Sequential(*[DMBlockGroup(n, widths[i], widths[i + 1], 1 if i == 0 else 2,
                                              act) for i in range(3)])
    self.batchnorm = nn.BatchNorm2d(widths[3])
    self.relu = act()
    self.logits = nn.Linear(widths[3], num_classes)

  def forward(self, x):
    out = self.layer(self.init_conv((x - self.mean) / self.std))
    return self.logits(self.relu(self.batchnorm(out)).mean((2, 3)))


class ResNetBlock(nn.Module):
  """The post-activation block of the CIFAR ResNet-18 (conv1, bn1, conv2, bn2; shortcut.0 and
  shortcut.1, a 1x1 convolution and BN, where the stride or width changes)."""

  def __init__(self, in_planes, planes, stride=1):
    super().__init__()
    self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(planes)
    self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
    self.bn2 = nn.BatchNorm2d(planes)
    self.shortcut = nn.Sequential()
    if stride != 1 or in_planes != planes:
      self.shortcut = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride, bias=False),
                                    nn.BatchNorm2d(planes))

  def forward(self, x):
    out = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
    return F.relu(out + self.shortcut(x))


class ResNet18(nn.Module):
  """The CIFAR ResNet-18 layout of pytorch-cifar and RobustBench (conv1, bn1, layer1-4,
  linear)."""

  def __init__(self, num_classes=10, mean=(), std=()):
    super().__init__()
    self.normalize = Normalize(mean, std)
    self.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(64)
    _add_stages(self, ResNetBlock)
    self.linear = nn.Linear(512, num_classes)

  def forward(self, x):
    out = F.relu(self.bn1(self.conv1(self.normalize(x))))
    out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
    return self.linear(out.mean((2, 3)))
