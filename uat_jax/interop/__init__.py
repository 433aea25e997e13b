"""PyTorch models in, uat_jax models out (docs/own_model.md).

    from uat_jax import interop
    clf = interop.from_torch(torch_model)             # a ported (jitted) or bridged classifier
    logits = clf.logits_fn(x)                          # x: NHWC float32 in [0, 1]
    module = interop.to_torch(uat_jax.load(workdir))   # NCHW in [0, 1], normalization inside

`from_torch` ports the architectures most RobustBench CIFAR L-inf entries use (PreAct ResNet-18
as Rice et al. write it, ResNet-18 as pytorch-cifar and RobustBench write it, WideResNet as
TRADES/RobustBench write it, DeepMind's WideResNet with ReLU or Swish and normalization inside;
recognized from the state_dict's names and shapes, or named by `arch`) into the equivalent Flax
model, which then runs jitted on any backend; any other module is bridged
(uat_jax.interop.bridge: torch's forward and autograd behind a custom VJP). A ported model is
checked against the torch module's own logits on random inputs. `to_torch` gives the torch twin
of every uat_jax model. torch is needed only here (the `torch` extra); importing uat_jax never
imports it.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Optional, Sequence

import jax
import numpy as np

from uat_jax import models
from uat_jax.errors import UatError
from uat_jax.interop import bridge, convert

PORT_TOLERANCE = 1e-4  # relative: float32 convolutions in two libraries, summed in other orders


@dataclasses.dataclass(frozen=True)
class Imported:
  """A classifier brought in from PyTorch: `logits_fn(x)` on NHWC float32 images in [0, 1]
  (eval-mode batch norm). `arch` is the ported architecture, or "bridge"; a port also has the
  Flax module and variables."""
  logits_fn: Callable
  arch: str
  num_classes: int
  flax_model: Any = None
  variables: Any = None

  def __call__(self, x):
    return self.logits_fn(x)


def _require_torch():
  try:
    import torch
  except ImportError:
    raise UatError("uat_jax.interop needs PyTorch: pip install 'uat_jax[torch]'") from None
  return torch


def _state_dict(model) -> dict[str, Any]:
  torch = _require_torch()
  if isinstance(model, torch.nn.Module):
    return model.state_dict()
  if isinstance(model, str):
    model = torch.load(model, map_location="cpu", weights_only=True)
  if isinstance(model, dict):
    for key in ("state_dict", "model_state_dict", "model"):
      if isinstance(model.get(key), dict):
        model = model[key]
    return {k[7:] if k.startswith("module.") else k: v for k, v in model.items()}  # (DataParallel)
  raise UatError(f"from_torch takes a torch.nn.Module, a state_dict or a checkpoint path, not "
                 f"{type(model).__name__}")


def _normalization(model) -> tuple[tuple, tuple]:
  norm = getattr(model, "normalize", None)
  if norm is not None and getattr(norm, "enabled", False):
    return (tuple(float(v) for v in norm.mean.flatten()),
            tuple(float(v) for v in norm.std.flatten()))
  return (), ()


def from_torch(model, arch: Optional[str] = None, input_shape: Sequence[int] = (32, 32, 3),
               mean: Optional[Sequence[float]] = None,
               std: Optional[Sequence[float]] = None,
               activation: Optional[str] = None) -> Imported:
  """A PyTorch classifier (an nn.Module taking NCHW images in [0, 1], a state_dict, or a path
  to one) as a uat_jax classifier. `arch`: one of convert.ARCHITECTURES (default: recognized
  from the state_dict) or "bridge" (torch runs it; the module itself is needed). `mean`/`std`:
  the per-channel normalization the model applies inside (default: none, that of a
  uat_jax.interop twin, or a DeepMind WideResNet's own buffers). `activation`: relu or swish,
  for a DeepMind WideResNet (read from the module; needed with weights alone). `input_shape`:
  (H, W, C) of its images."""
  torch = _require_torch()
  is_module = isinstance(model, torch.nn.Module)
  if arch == "bridge" or (arch is None and is_module and
                          convert.recognize(model.state_dict()) is None):
    if not is_module:
      raise UatError("bridging runs the torch module itself: pass the nn.Module, not weights")
    with torch.no_grad():
      probe = model.eval()(torch.zeros((1, input_shape[2], *input_shape[:2]),
                                       device=next((p.device for p in model.parameters()),
                                                   torch.device("cpu"))))
    num_classes = int(probe.shape[-1])
    return Imported(bridge.torch_logits_fn(model, num_classes), "bridge", num_classes)
  state = _state_dict(model)
  settings = convert.recognize(state)
  if settings is None or (arch is not None and settings["arch"] != arch):
    found = settings["arch"] if settings else "none of " + ", ".join(convert.ARCHITECTURES)
    raise UatError(f"the weights are not a {arch or 'supported architecture'} (recognized: "
                   f"{found}): pass the nn.Module itself with arch='bridge' to run it through "
                   "torch")
  arch = settings["arch"]
  if mean is None and std is None:
    mean, std = ((settings.get("mean"), settings.get("std")) if "mean" in settings
                 else _normalization(model) if is_module else ((), ()))
  kwargs = {"num_classes": settings["num_classes"], "mean": tuple(mean or ()),
            "std": tuple(std or ())}
  kwargs.update({k: settings[k] for k in ("depth", "width") if k in settings})
  if "image" in settings:
    input_shape = settings["image"]
  if arch == "dm_wide_resnet":  # uat_jax's WideResNet with DeepMind's activation and padding
    if activation is None and not is_module:
      raise UatError("a DeepMind WideResNet's activation is not in its weights: pass "
                     "activation='swish' or 'relu' (or the nn.Module, whose layers say it)")
    activation = activation or _activation(model)
    if activation not in models.ACTIVATIONS:
      raise UatError(f"activation={activation!r}: choose one of {sorted(models.ACTIVATIONS)}")
    flax_model = models.WideResNet(**kwargs, activation=activation, same_padding=True)
  else:
    flax_model = models.MODELS[arch](**kwargs)
  hw = (input_shape[0] // 4, input_shape[1] // 4)
  variables = convert.flax_from_torch(state, arch, settings, conv_output_hw=hw)
  _check_shapes(flax_model, variables, input_shape, arch)
  clf = Imported(models.classifier(flax_model, variables), arch, settings["num_classes"],
                 flax_model, variables)
  if is_module:
    _check_logits(model, clf, input_shape)
  return clf


def _activation(model) -> str:
  """swish if the module has a Swish or SiLU layer (DeepMind's WideResNets name theirs Swish),
  else relu."""
  kinds = {type(m).__name__ for m in model.modules()}
  return "swish" if kinds & {"Swish", "SiLU"} else "relu"


def _check_shapes(flax_model, variables, input_shape, arch):
  want = jax.eval_shape(lambda: flax_model.init(jax.random.PRNGKey(0),
                                                np.zeros((1, *input_shape), np.float32)))
  got = jax.tree.map(np.shape, variables)
  want = {k: jax.tree.map(lambda s: tuple(s.shape), v) for k, v in want.items()}
  if got != {k: want.get(k, {}) for k in got}:
    raise UatError(f"the weights do not fit a {arch} on {tuple(input_shape)} images: pass "
                   "input_shape=(H, W, C) of the model's images")


def _check_logits(module, clf: Imported, input_shape) -> None:
  """The port's logits against the torch module's own on random inputs (eval mode)."""
  torch = _require_torch()
  x = np.random.default_rng(0).uniform(size=(2, *input_shape)).astype(np.float32)
  module.eval()
  device = next((p.device for p in module.parameters()), torch.device("cpu"))
  with torch.no_grad():
    ref = module(torch.from_numpy(x.transpose(0, 3, 1, 2)).to(device)).float().cpu().numpy()
  got = np.asarray(clf.logits_fn(x))
  err = float(np.max(np.abs(got - ref)) / max(np.max(np.abs(ref)), 1e-12))
  if err > PORT_TOLERANCE:
    raise UatError(f"the {clf.arch} port's logits differ from the torch module's by {err:.2g} "
                   "(relative): the module computes something else (a normalization inside? pass "
                   "mean=..., std=...), or pass arch='bridge' to run it through torch")


def to_torch(classifier, input_shape: Optional[Sequence[int]] = None):
  """The torch twin (eval mode, NCHW images in [0, 1], normalization inside) of a uat_jax
  classifier: a uat_jax.load(...) Classifier, a from_torch port, or (flax_model, variables)."""
  torch = _require_torch()
  from uat_jax.interop import torch_models
  if isinstance(classifier, tuple):
    flax_model, variables = classifier
  elif isinstance(classifier, Imported) and classifier.flax_model is not None:
    flax_model, variables = classifier.flax_model, classifier.variables
  elif hasattr(classifier, "config") and hasattr(classifier, "logits_fn"):  # uat_jax.load
    from uat_jax import data
    spec = data.get_spec(classifier.config.data.name)
    flax_model = models.build(classifier.config, spec)
    variables = classifier.logits_fn.args[0]
    input_shape = input_shape or spec.shape
  else:
    raise UatError("to_torch takes uat_jax.load(...), a from_torch port or (flax_model, "
                   f"variables), not {type(classifier).__name__}")
  variables = jax.device_get(variables)
  arch = next((k for k, v in models.MODELS.items() if isinstance(flax_model, v)), None)
  common = {"num_classes": flax_model.num_classes, "mean": tuple(flax_model.mean),
            "std": tuple(flax_model.std)}
  settings: dict[str, Any] = {}
  hw = None
  if arch in ("small_cnn", "madry_cnn"):
    kernel = np.asarray(variables["params"]["Conv_0"]["kernel"])
    channels = np.asarray(variables["params"]["Conv_1"]["kernel"]).shape[-1]
    side = int(round((np.asarray(variables["params"]["Dense_0"]["kernel"]).shape[0]
                      / channels) ** 0.5))
    hw = (side, side)
    extra = {"width": flax_model.width} if arch == "small_cnn" else {}
    module = (torch_models.SmallCNN if arch == "small_cnn" else torch_models.MadryCNN)(
        in_ch=kernel.shape[2], image_size=4 * side, **extra, **common)
  elif arch == "preact_resnet18":
    module = torch_models.PreActResNet18(**common)
  elif arch == "resnet18":
    module = torch_models.ResNet18(**common)
  elif arch == "wide_resnet" and flax_model.same_padding:  # DeepMind's layout
    arch, settings = "dm_wide_resnet", {"depth": flax_model.depth, "width": flax_model.width}
    channels = len(common["mean"]) or 3
    module = torch_models.DMWideResNet(
        depth=flax_model.depth, width=flax_model.width, num_classes=common["num_classes"],
        activation=flax_model.activation, mean=common["mean"] or (0.0,) * channels,
        std=common["std"] or (1.0,) * channels)
  elif arch == "wide_resnet":
    if flax_model.activation != "relu":
      raise UatError("to_torch: a WideResNet with activation "
                     f"{flax_model.activation!r} has no TRADES-layout twin (same_padding=True "
                     "gives DeepMind's layout, which has one)")
    settings = {"depth": flax_model.depth, "width": flax_model.width}
    module = torch_models.WideResNet(depth=flax_model.depth, widen_factor=flax_model.width,
                                     **common)
  else:
    raise UatError(f"to_torch knows uat_jax's models ({', '.join(models.MODELS)}), not "
                   f"{type(flax_model).__name__}")
  state = convert.torch_from_flax(variables, arch, settings, conv_output_hw=hw)
  missing, unexpected = module.load_state_dict({k: torch.tensor(v) for k, v in state.items()},
                                               strict=False)
  left = [k for k in missing if not k.endswith(("num_batches_tracked", "normalize.mean",
                                                 "normalize.std")) and k not in ("mean", "std")]
  if left or unexpected:
    raise UatError(f"to_torch: {arch} weights did not fit its torch twin "
                   f"({(left + unexpected)[:3]})")
  return module.eval()


__all__ = ["from_torch", "to_torch", "Imported", "bridge", "convert"]
