"""Flax (linen) classifiers. Inputs are NHWC images in [0, 1]; normalization happens inside.

Every model has the signature `model.apply(variables, x, train=bool)`; models with batch norm keep
running statistics in the `batch_stats` collection (`train=False` uses them).
"""

from __future__ import annotations

import functools
from typing import Any, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from uat_jax.errors import UatError


class Normalize(nn.Module):
  """(x - mean) / std per channel; identity when mean/std are empty."""
  mean: Sequence[float] = ()
  std: Sequence[float] = ()

  def __call__(self, x):
    if not self.mean:
      return x
    return (x - jnp.asarray(self.mean, x.dtype)) / jnp.asarray(self.std, x.dtype)


def max_pool_2x2(x):
  """2x2/2 max pooling as reshape + max.

  Same values as nn.max_pool(x, (2, 2), (2, 2)); its gradient is a cheap elementwise select instead
  of select_and_scatter (on XLA:CPU, for (128, 28, 28, 32): 12 ms instead of 62 ms). On exact
  ties the gradient is split among the tied inputs instead of going to one of them.
  """
  b, h, w, c = x.shape
  return x[:, : h // 2 * 2, : w // 2 * 2].reshape(b, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))


def conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None,
                         rhs_dilation=None, dimension_numbers=None, feature_group_count=1,
                         **kwargs):
  """`lax.conv_general_dilated` for NHWC inputs and HWIO kernels (what nn.Conv passes), with the
  same values and derivatives, differentiated so that XLA:CPU keeps its fast convolution for the
  input gradient.

  JAX transposes a convolution into one on the reversed kernel with its input and output feature
  axes relabelled (dim_labels 01oi). XLA:CPU runs that layout only where it happens to materialize
  the transposed kernel; inside a while loop (a rolled PGD loop) and in a PGD-1 step it did not,
  and fell back to a generic convolution 4-5x slower (bench/RESULTS.md: the rolled attack loop was
  3x slower than unrolled, a PGD-1 AT step cost as much as PGD-3). Here the tangent map's input term
  is written on the kernel with its feature axes swapped (declared HWOI), so its transpose, the
  input gradient, is a canonical HWIO convolution on a reversed copy of the kernel. A custom_jvp,
  not a custom_vjp: forward mode (jax.jvp, the spectral norm's power iteration) keeps working."""
  del dimension_numbers  # NHWC / HWIO, as nn.Conv always passes for 2-D inputs
  common = dict(window_strides=window_strides, padding=padding, lhs_dilation=lhs_dilation,
                rhs_dilation=rhs_dilation, feature_group_count=feature_group_count, **kwargs)
  conv = functools.partial(jax.lax.conv_general_dilated,
                           dimension_numbers=("NHWC", "HWIO", "NHWC"), **common)
  conv_oi = functools.partial(jax.lax.conv_general_dilated,
                              dimension_numbers=("NHWC", "HWOI", "NHWC"), **common)

  def jvp(primals, tangents):
    x, w = primals
    dx, dw = tangents
    terms = []
    if not isinstance(dx, jax.custom_derivatives.SymbolicZero):
      terms.append(conv_oi(dx, jnp.swapaxes(w, -1, -2)))
    if not isinstance(dw, jax.custom_derivatives.SymbolicZero):
      terms.append(conv(x, dw))
    y = conv(x, w)
    return y, functools.reduce(jnp.add, terms) if terms else jnp.zeros_like(y)

  if lhs.ndim != 4 or feature_group_count != 1:  # outside what nn.Conv does in these models
    return conv(lhs, rhs)
  f = jax.custom_jvp(conv)
  f.defjvp(jvp, symbolic_zeros=True)
  return f(lhs, rhs)


def _conv(dtype, *args, **kwargs):
  """nn.Conv computing in `dtype` (parameters stay float32), differentiated through
  conv_general_dilated above."""
  return nn.Conv(*args, dtype=dtype, conv_general_dilated=conv_general_dilated, **kwargs)


def _logits_dtype(dtype):
  """Logits leave the model in float32 at least (bfloat16 compute), float64 when computing in
  float64 (numerical checks)."""
  return jnp.promote_types(dtype, jnp.float32)


def _dense(dtype, *args, **kwargs):
  return nn.Dense(*args, dtype=dtype, **kwargs)


class MadryCNN(nn.Module):
  """The MNIST challenge model of Madry et al. 2018: conv32-5x5, pool, conv64-5x5, pool, fc1024."""
  num_classes: int = 10
  mean: Sequence[float] = ()
  std: Sequence[float] = ()
  dtype: Any = jnp.float32  # computation dtype (bfloat16: mixed precision); params are float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    del train  # no batch norm or dropout
    x = Normalize(self.mean, self.std)(x.astype(self.dtype))
    x = max_pool_2x2(nn.relu(_conv(self.dtype, 32, (5, 5), padding="SAME")(x)))
    x = max_pool_2x2(nn.relu(_conv(self.dtype, 64, (5, 5), padding="SAME")(x)))
    x = nn.relu(_dense(self.dtype, 1024)(x.reshape(x.shape[0], -1)))
    return _dense(self.dtype, self.num_classes)(x).astype(_logits_dtype(self.dtype))


class SmallCNN(nn.Module):
  """A ~0.2M-parameter CNN for quick CPU runs: conv16-3x3, pool, conv32-3x3, pool, fc128."""
  num_classes: int = 10
  mean: Sequence[float] = ()
  std: Sequence[float] = ()
  dtype: Any = jnp.float32  # computation dtype (bfloat16: mixed precision); params are float32
  width: int = 16

  @nn.compact
  def __call__(self, x, train: bool = False):
    del train
    x = Normalize(self.mean, self.std)(x.astype(self.dtype))
    x = max_pool_2x2(nn.relu(_conv(self.dtype, self.width, (3, 3), padding="SAME")(x)))
    x = max_pool_2x2(nn.relu(_conv(self.dtype, 2 * self.width, (3, 3), padding="SAME")(x)))
    x = nn.relu(_dense(self.dtype, 8 * self.width)(x.reshape(x.shape[0], -1)))
    return _dense(self.dtype, self.num_classes)(x).astype(_logits_dtype(self.dtype))


_conv_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


def _bn(train, axis_name=None, dtype=jnp.float32):
  # axis_name: under pmap, batch statistics are averaged over that device axis (under jit over a
  # mesh the batch is global already and axis_name stays None).
  # PyTorch defaults (momentum 0.1 there = 0.9 here, eps 1e-5), as in the Madry/Rice recipes.
  # Two-pass variance: E[x^2] - E[x]^2 cancels badly in float32, and its noise (e.g. from the
  # summation order on 1 vs 8 devices) reached 3% in the input gradients of the attack.
  return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                      use_fast_variance=False, axis_name=axis_name if train else None,
                      dtype=dtype)


ACTIVATIONS = {"relu": nn.relu, "swish": nn.swish}


class PreActBlock(nn.Module):
  """Pre-activation basic block (He et al. 2016): BN-act-conv3x3-BN-act-conv3x3 + shortcut.
  `same_padding`: the strided convolution pads as TensorFlow's SAME does (one row and column
  after, none before), as DeepMind's WideResNets do; otherwise one on each side."""
  features: int
  stride: int = 1
  bn_axis_name: Optional[str] = None
  dtype: Any = jnp.float32
  activation: str = "relu"
  same_padding: bool = False

  @nn.compact
  def __call__(self, x, train: bool):
    act = ACTIVATIONS[self.activation]
    out = act(_bn(train, self.bn_axis_name, self.dtype)(x))
    shortcut = x
    if self.stride != 1 or x.shape[-1] != self.features:
      shortcut = _conv(self.dtype, self.features, (1, 1), (self.stride, self.stride),
                       use_bias=False, kernel_init=_conv_init)(out)
    out = _conv(self.dtype, self.features, (3, 3), (self.stride, self.stride),
                padding="SAME" if self.same_padding else 1, use_bias=False,
                kernel_init=_conv_init)(out)
    out = act(_bn(train, self.bn_axis_name, self.dtype)(out))
    out = _conv(self.dtype, self.features, (3, 3), padding=1, use_bias=False,
                kernel_init=_conv_init)(out)
    return out + shortcut


class _ResNet(nn.Module):
  """The settings both ResNet-18s share."""
  num_classes: int = 10
  mean: Sequence[float] = ()
  std: Sequence[float] = ()
  dtype: Any = jnp.float32  # computation dtype (bfloat16: mixed precision); params are float32
  stage_sizes: Sequence[int] = (2, 2, 2, 2)
  bn_axis_name: Optional[str] = None


class PreActResNet18(_ResNet):
  """PreAct ResNet-18 for 32x32 inputs, as in Rice et al. 2020 (robust overfitting)."""

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = Normalize(self.mean, self.std)(x.astype(self.dtype))
    x = _conv(self.dtype, 64, (3, 3), padding=1, use_bias=False, kernel_init=_conv_init)(x)
    for i, blocks in enumerate(self.stage_sizes):
      for j in range(blocks):
        x = PreActBlock(64 * 2 ** i, stride=2 if (i > 0 and j == 0) else 1,
                        bn_axis_name=self.bn_axis_name, dtype=self.dtype)(x, train)
    x = nn.relu(_bn(train, self.bn_axis_name, self.dtype)(x))
    return _dense(self.dtype, self.num_classes)(x.mean(axis=(1, 2))).astype(_logits_dtype(self.dtype))


class BasicBlock(nn.Module):
  """Post-activation basic block (He et al. 2016): conv3x3-BN-ReLU-conv3x3-BN plus the shortcut
  (a 1x1 convolution and BN where the stride or width changes), then ReLU."""
  features: int
  stride: int = 1
  bn_axis_name: Optional[str] = None
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool):
    conv = lambda k, s, p: _conv(self.dtype, self.features, (k, k), (s, s), padding=p,  # noqa
                                 use_bias=False, kernel_init=_conv_init)
    out = nn.relu(_bn(train, self.bn_axis_name, self.dtype)(conv(3, self.stride, 1)(x)))
    out = _bn(train, self.bn_axis_name, self.dtype)(conv(3, 1, 1)(out))
    shortcut = x
    if self.stride != 1 or x.shape[-1] != self.features:
      shortcut = _bn(train, self.bn_axis_name, self.dtype)(conv(1, self.stride, 0)(x))
    return nn.relu(out + shortcut)


class ResNet18(_ResNet):
  """ResNet-18 for 32x32 inputs with post-activation blocks (the CIFAR ResNet-18 of Kuang Liu's
  pytorch-cifar and RobustBench)."""

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = Normalize(self.mean, self.std)(x.astype(self.dtype))
    x = _conv(self.dtype, 64, (3, 3), padding=1, use_bias=False, kernel_init=_conv_init)(x)
    x = nn.relu(_bn(train, self.bn_axis_name, self.dtype)(x))
    for i, blocks in enumerate(self.stage_sizes):
      for j in range(blocks):
        x = BasicBlock(64 * 2 ** i, stride=2 if (i > 0 and j == 0) else 1,
                       bn_axis_name=self.bn_axis_name, dtype=self.dtype)(x, train)
    logits = _dense(self.dtype, self.num_classes)(x.mean(axis=(1, 2)))
    return logits.astype(_logits_dtype(self.dtype))


class WideResNet(nn.Module):
  """WideResNet-depth-width (Zagoruyko & Komodakis 2016) with pre-activation blocks; WRN-34-10
  is the Madry/TRADES CIFAR model. `activation` (relu or swish) and `same_padding` (see
  PreActBlock) give DeepMind's variant (Gowal et al. 2020, Rebuffi et al. 2021)."""
  num_classes: int = 10
  mean: Sequence[float] = ()
  std: Sequence[float] = ()
  dtype: Any = jnp.float32  # computation dtype (bfloat16: mixed precision); params are float32
  depth: int = 34
  width: int = 10
  bn_axis_name: Optional[str] = None
  activation: str = "relu"
  same_padding: bool = False

  @nn.compact
  def __call__(self, x, train: bool = False):
    if (self.depth - 4) % 6:
      raise UatError(f"WideResNet depth must be 6n+4 (e.g. 16, 28, 34), got {self.depth} "
                     "(--config.model.depth)")
    n = (self.depth - 4) // 6
    x = Normalize(self.mean, self.std)(x.astype(self.dtype))
    x = _conv(self.dtype, 16, (3, 3), padding=1, use_bias=False, kernel_init=_conv_init)(x)
    for i, features in enumerate((16 * self.width, 32 * self.width, 64 * self.width)):
      for j in range(n):
        x = PreActBlock(features, stride=2 if (i > 0 and j == 0) else 1,
                        bn_axis_name=self.bn_axis_name, dtype=self.dtype,
                        activation=self.activation, same_padding=self.same_padding)(x, train)
    x = ACTIVATIONS[self.activation](_bn(train, self.bn_axis_name, self.dtype)(x))
    return _dense(self.dtype, self.num_classes)(x.mean(axis=(1, 2))).astype(_logits_dtype(self.dtype))


MODELS = {
    "madry_cnn": MadryCNN,
    "small_cnn": SmallCNN,
    "preact_resnet18": PreActResNet18,
    "resnet18": ResNet18,
    "wide_resnet": WideResNet,
}


def create_model(model_config, spec, bn_axis_name: Optional[str] = None,
                 dtype: Any = jnp.float32) -> nn.Module:
  """Builds `model_config.name` for a dataset spec (classes, normalization); `bn_axis_name`
  (batch-norm models) averages batch statistics over a pmap axis; `dtype` is the computation
  dtype (float32 logits either way)."""
  if model_config.name not in MODELS:
    raise UatError(f"unknown model {model_config.name!r}: choose one of {sorted(MODELS)} "
                   "(--config.model.name)")
  kwargs = dict(num_classes=spec.num_classes, dtype=dtype)
  if model_config.get("normalize", True):
    kwargs.update(mean=tuple(spec.mean), std=tuple(spec.std))
  if model_config.name == "wide_resnet":
    kwargs.update(depth=model_config.depth, width=model_config.width)
  if bn_axis_name and model_config.name in ("preact_resnet18", "resnet18", "wide_resnet"):
    kwargs.update(bn_axis_name=bn_axis_name)
  return MODELS[model_config.name](**kwargs)


DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float64": jnp.float64}


def build(config, spec, *, for_training: bool = False,
          bn_axis_name: Optional[str] = None) -> nn.Module:
  """The model of a run's config (config.model, config.dtype). For training it computes in
  config.dtype (`bn_axis_name`: average batch-norm statistics over that pmap axis); otherwise
  (evaluation, attacks, Jacobians) in float32, or in float64 when config.dtype is float64
  (numerical checks). Both have the same parameters."""
  eval_dtype = jnp.float64 if config.dtype == "float64" else jnp.float32
  return create_model(config.model, spec, bn_axis_name=bn_axis_name if for_training else None,
                      dtype=DTYPES[config.dtype] if for_training else eval_dtype)


_PROGRAMS: dict = {}  # key -> jax.jit(body) of jit_with_model, for the process
MAX_PROGRAMS = 256  # past this many keys the kept programs are dropped (and traced again)


def jit_with_model(logits_fn, body, key=None):
  """jax.jit of `body(logits_fn, *args)`. A `jax.tree_util.Partial` logits_fn (as
  uat_jax.load returns) is passed as an argument, so its parameters are inputs of the
  program rather than constants baked into it (faster compiles, one program for several
  checkpoints of one model); any other callable is closed over.

  `key` (hashable; with a Partial logits_fn): the jitted body is kept under it for the process,
  so a later call with the same key (the same attack on another checkpoint of the model, as a
  study evaluates run after run) reuses the programs traced and compiled before instead of
  tracing and compiling them again. The key must determine the body: everything it closes
  over."""
  if isinstance(logits_fn, jax.tree_util.Partial):
    if key is None:
      compiled = jax.jit(body)
    else:
      compiled = _PROGRAMS.get(key)
      if compiled is None:
        if len(_PROGRAMS) >= MAX_PROGRAMS:
          _PROGRAMS.clear()
        compiled = _PROGRAMS[key] = jax.jit(body)
    return lambda *args: compiled(logits_fn, *args)
  return jax.jit(lambda *args: body(logits_fn, *args))


@functools.lru_cache(maxsize=None)
def _inference_apply(model):
  """One function object per model, so Partials of it share compiled programs."""
  return lambda variables, x: model.apply(variables, x, train=False)


def classifier(model, variables) -> jax.tree_util.Partial:
  """`logits_fn(x)` of a model in inference mode (running batch-norm statistics), as a Partial
  whose leaves are the variables: see jit_with_model."""
  return jax.tree_util.Partial(_inference_apply(model), variables)
