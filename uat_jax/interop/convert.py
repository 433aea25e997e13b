"""Weights between uat_jax's Flax models and their PyTorch twins (uat_jax.interop.torch_models,
named as Rice et al.'s PreActResNet18, the TRADES/RobustBench WideResNet and DeepMind's
WideResNet (RobustBench's DMWideResNet) name their layers):
which architecture a state_dict holds, and the layer-by-layer pairing both ways. Arrays are
numpy: convolution kernels HWIO here and OIHW there, dense kernels transposed, and the first
dense layer of the CNNs reordered between NHWC and NCHW flattening."""

from __future__ import annotations

from typing import Any, Optional

import numpy as np

from uat_jax.errors import UatError

ARCHITECTURES = ("small_cnn", "madry_cnn", "preact_resnet18", "resnet18", "wide_resnet",
                 "dm_wide_resnet")


def recognize(state: dict[str, Any]) -> Optional[dict[str, Any]]:
  """{"arch", and its settings} of a state_dict of one of the supported architectures, from its
  keys and shapes; None for any other."""
  keys = set(state)
  if {"conv1.weight", "bn1.weight", "layer1.0.bn2.weight", "layer4.1.conv2.weight",
      "linear.weight"} <= keys:
    return {"arch": "resnet18", "num_classes": state["linear.weight"].shape[0]}
  if {"layer1.0.bn1.weight", "layer4.1.conv2.weight", "bn.weight", "linear.weight"} <= keys:
    return {"arch": "preact_resnet18", "num_classes": state["linear.weight"].shape[0]}
  if {"block1.layer.0.bn1.weight", "block3.layer.0.conv1.weight", "fc.weight"} <= keys:
    n = len({k.split(".")[2] for k in keys if k.startswith("block1.layer.")})
    width = state["block1.layer.0.conv1.weight"].shape[0] // 16
    return {"arch": "wide_resnet", "depth": 6 * n + 4, "width": width,
            "num_classes": state["fc.weight"].shape[0]}
  if {"init_conv.weight", "layer.0.block.0.conv_0.weight", "batchnorm.weight",
      "logits.weight"} <= keys:
    n = len({k.split(".")[3] for k in keys if k.startswith("layer.0.block.")})
    out = {"arch": "dm_wide_resnet", "depth": 6 * n + 4,
           "width": state["layer.0.block.0.conv_0.weight"].shape[0] // 16,
           "num_classes": state["logits.weight"].shape[0]}
    if "mean" in keys and "std" in keys:  # the normalization it applies inside
      out.update({k: tuple(float(v) for v in np.asarray(
          state[k].detach().cpu().numpy() if hasattr(state[k], "detach") else state[k]).ravel())
          for k in ("mean", "std")})
    return out
  if {"c1.weight", "c2.weight", "f1.weight", "f2.weight"} <= keys:
    w = state["c1.weight"]
    arch = "madry_cnn" if w.shape[-1] == 5 else "small_cnn"
    side = int(round((state["f1.weight"].shape[1] / state["c2.weight"].shape[0]) ** 0.5))
    out = {"arch": arch, "num_classes": state["f2.weight"].shape[0],
           "image": (4 * side, 4 * side, w.shape[1])}
    if arch == "small_cnn":
      out["width"] = w.shape[0]
    return out
  return None


def _pairs(arch: str, settings: dict[str, Any]) -> list[tuple[tuple[str, ...], str, str]]:
  """[(Flax path, torch prefix, kind)] with kind conv | bn | dense | dense_nhwc."""
  if arch in ("small_cnn", "madry_cnn"):
    return [(("Conv_0",), "c1", "conv"), (("Conv_1",), "c2", "conv"),
            (("Dense_0",), "f1", "dense_nhwc"), (("Dense_1",), "f2", "dense")]
  if arch == "resnet18":  # post-activation blocks: conv, BN, conv, BN (+ shortcut conv, BN)
    out = [(("Conv_0",), "conv1", "conv"), (("BatchNorm_0",), "bn1", "bn")]
    for b, (i, j) in enumerate((i, j) for i in range(4) for j in range(2)):
      prefix, block = f"layer{i + 1}.{j}", f"BasicBlock_{b}"
      out += [((block, "Conv_0"), f"{prefix}.conv1", "conv"),
              ((block, "BatchNorm_0"), f"{prefix}.bn1", "bn"),
              ((block, "Conv_1"), f"{prefix}.conv2", "conv"),
              ((block, "BatchNorm_1"), f"{prefix}.bn2", "bn")]
      if i > 0 and j == 0:
        out += [((block, "Conv_2"), f"{prefix}.shortcut.0", "conv"),
                ((block, "BatchNorm_2"), f"{prefix}.shortcut.1", "bn")]
    return out + [(("Dense_0",), "linear", "dense")]
  # Per layout: its first convolution, its blocks (prefix, has a shortcut convolution), a
  # block's layer names (bn1, shortcut, conv1, bn2, conv2) and the head (bn, dense).
  if arch == "preact_resnet18":
    first = "conv1"
    blocks = [(f"layer{i + 1}.{j}", i > 0 and j == 0) for i in range(4) for j in range(2)]
    names, head = ("bn1", "shortcut.0", "conv1", "bn2", "conv2"), ("bn", "linear")
  else:
    n = (settings["depth"] - 4) // 6
    grouped = [(i, j, j == 0 and (i > 0 or settings["width"] != 1))
               for i in range(3) for j in range(n)]
    if arch == "dm_wide_resnet":
      first, head = "init_conv", ("batchnorm", "logits")
      blocks = [(f"layer.{i}.block.{j}", s) for i, j, s in grouped]
      names = ("batchnorm_0", "shortcut", "conv_0", "batchnorm_1", "conv_1")
    else:
      first, head = "conv1", ("bn1", "fc")
      blocks = [(f"block{i + 1}.layer.{j}", s) for i, j, s in grouped]
      names = ("bn1", "convShortcut", "conv1", "bn2", "conv2")
  out = [(("Conv_0",), first, "conv")]
  bn1, shortcut, conv1, bn2, conv2 = names
  for b, (prefix, has_shortcut) in enumerate(blocks):
    block = f"PreActBlock_{b}"
    out.append(((block, "BatchNorm_0"), f"{prefix}.{bn1}", "bn"))
    if has_shortcut:
      out.append(((block, "Conv_0"), f"{prefix}.{shortcut}", "conv"))
    k = 1 if has_shortcut else 0
    out += [((block, f"Conv_{k}"), f"{prefix}.{conv1}", "conv"),
            ((block, "BatchNorm_1"), f"{prefix}.{bn2}", "bn"),
            ((block, f"Conv_{k + 1}"), f"{prefix}.{conv2}", "conv")]
  return out + [(("BatchNorm_0",), head[0], "bn"), (("Dense_0",), head[1], "dense")]


def _get(tree, path):
  for p in path:
    tree = tree[p]
  return tree


def _set(tree, path, leaf, value):
  for p in path:
    tree = tree.setdefault(p, {})
  tree[leaf] = value


def flax_from_torch(state: dict[str, Any], arch: str, settings: dict[str, Any],
                    conv_output_hw: Optional[tuple[int, int]] = None) -> dict[str, Any]:
  """{"params", "batch_stats"} of uat_jax's model `arch` from a torch state_dict (numpy or torch
  tensors). `conv_output_hw`: the feature map before the first dense layer of the CNNs."""
  state = {k: np.asarray(v.detach().cpu().numpy() if hasattr(v, "detach") else v)
           for k, v in state.items()}
  params: dict = {}
  stats: dict = {}
  for path, prefix, kind in _pairs(arch, settings):
    try:
      if kind == "conv":
        _set(params, path, "kernel", state[f"{prefix}.weight"].transpose(2, 3, 1, 0))
        if f"{prefix}.bias" in state:
          _set(params, path, "bias", state[f"{prefix}.bias"])
      elif kind == "bn":
        _set(params, path, "scale", state[f"{prefix}.weight"])
        _set(params, path, "bias", state[f"{prefix}.bias"])
        _set(stats, path, "mean", state[f"{prefix}.running_mean"])
        _set(stats, path, "var", state[f"{prefix}.running_var"])
      else:
        w = state[f"{prefix}.weight"]
        if kind == "dense_nhwc":  # torch flattens C, H, W; Flax H, W, C
          h, wd = conv_output_hw
          c = w.shape[1] // (h * wd)
          w = w.reshape(w.shape[0], c, h, wd).transpose(0, 2, 3, 1).reshape(w.shape[0], -1)
        _set(params, path, "kernel", w.T)
        _set(params, path, "bias", state[f"{prefix}.bias"])
    except KeyError as e:
      raise UatError(f"the state_dict has no {e.args[0]} where a {arch} keeps {prefix}: it is "
                     "another architecture (pass arch=... or use the generic bridge)") from None
  f32 = lambda t: {k: f32(v) if isinstance(v, dict) else np.asarray(v, np.float32)  # noqa: E731
                   for k, v in t.items()}
  return {"params": f32(params), "batch_stats": f32(stats)}


def torch_from_flax(variables: dict[str, Any], arch: str, settings: dict[str, Any],
                    conv_output_hw: Optional[tuple[int, int]] = None) -> dict[str, np.ndarray]:
  """The torch state_dict entries (numpy) of uat_jax's model `arch` from its Flax variables."""
  params = variables["params"]
  stats = variables.get("batch_stats", {})
  out: dict[str, np.ndarray] = {}
  for path, prefix, kind in _pairs(arch, settings):
    p = _get(params, path)
    if kind == "conv":
      out[f"{prefix}.weight"] = np.asarray(p["kernel"]).transpose(3, 2, 0, 1)
      if "bias" in p:
        out[f"{prefix}.bias"] = np.asarray(p["bias"])
    elif kind == "bn":
      s = _get(stats, path)
      out.update({f"{prefix}.weight": np.asarray(p["scale"]), f"{prefix}.bias":
                  np.asarray(p["bias"]), f"{prefix}.running_mean": np.asarray(s["mean"]),
                  f"{prefix}.running_var": np.asarray(s["var"])})
    else:
      w = np.asarray(p["kernel"]).T
      if kind == "dense_nhwc":
        h, wd = conv_output_hw
        c = w.shape[1] // (h * wd)
        w = w.reshape(w.shape[0], h, wd, c).transpose(0, 3, 1, 2).reshape(w.shape[0], -1)
      out[f"{prefix}.weight"] = w
      out[f"{prefix}.bias"] = np.asarray(p["bias"])
  return {k: np.ascontiguousarray(v, np.float32) for k, v in out.items()}
