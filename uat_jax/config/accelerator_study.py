"""The study grid for accelerators (cifar10_study, cifar100_study, mnist_study, svhn_study):
the Fashion-MNIST study's design at accelerator scale, as a study config (uat_jax.study)."""

from __future__ import annotations

import ml_collections

from uat_jax.config import loading


def accelerator_study(config: str, eps_grid: tuple[float, ...], large_eps: float,
                      overrides: dict | None = None) -> ml_collections.ConfigDict:
  """A study config (python -m uat_jax.study) for a dataset's training config, with the design of
  the fashion_mnist_study recipe at accelerator scale: beta (EntM) / alpha (LS) swept on the
  validation split at seed 0 with the final schedule; AT, AT+EntM and AT+LS with seeds 0-2,
  standard, EntM and LS with seeds 0-1; the AT+EntM ablation (regularizer on clean / both, the
  attack on the regularized objective) with seed 0. Evaluation on the first 2,000 test images
  with the paper and strong presets over `eps_grid` (best checkpoint) and at the training eps and
  `large_eps` (last checkpoint, ablation); Jacobians of the adversarially trained runs on 500
  test images. The best checkpoint is kept by validation PGD accuracy (adversarially trained
  methods; the training config must hold out validation images) or clean accuracy (the others).
  `overrides` (shaped like the training config) apply to every run."""
  adversarial = ("at", "at_entm", "at_ls")
  train_eps = loading.from_file(config, "at").attack.eps
  s = ml_collections.ConfigDict()
  s.config = config
  s.methods = ("standard", "entm", "ls") + adversarial
  s.seeds = ml_collections.ConfigDict(
      {m: (0, 1, 2) if m in adversarial else (0, 1) for m in s.methods})
  s.baseline = "at"
  s.standard_baseline = "standard"
  s.large_eps = large_eps  # the large eps of claims 1 and 5 (the report's primary outcome)
  s.overrides = ml_collections.ConfigDict(overrides or {})
  s.method_overrides = ml_collections.ConfigDict({
      m: {"best_checkpoint": {"metric": "eval/clean_accuracy"}}
      for m in ("standard", "entm", "ls")})
  s.sweep_from = ""  # or the sweep.json of a finished sweep: its choice, no sweep runs
  s.sweep = ml_collections.ConfigDict({
      "entm": ("regularizer.beta", (0.3, 1.0, 2.0)),
      "ls": ("regularizer.alpha", (0.2, 0.5, 0.8)),
      "at_entm": ("regularizer.beta", (0.1, 0.3, 1.0)),
      "at_ls": ("regularizer.alpha", (0.1, 0.2, 0.5)),
  })
  s.ablation = ml_collections.ConfigDict({
      "method": "at_entm", "seeds": (0,),
      "variants": {"on_clean": {"regularizer": {"on": "clean"}},
                   "on_both": {"regularizer": {"on": "both"}},
                   "attack_objective": {"attack": {"loss": "objective"}}},
  })

  def output(preset, checkpoint, eps, checks=False):
    spec = {"preset": preset, "checkpoint": checkpoint, "eps": tuple(eps), "num_examples": 2000,
            "batch_size": 500, "checks": checks}
    if preset == "strong":
      spec["only_robust"] = True
    return spec

  pair = (train_eps, large_eps)
  s.evals = ml_collections.ConfigDict({
      "paper": output("paper", "best", eps_grid, checks=True),
      "strong": output("strong", "best", eps_grid),
      "paper_last": output("paper", "last", pair),
      "strong_last": output("strong", "last", pair),
  })
  s.ablation_evals = ml_collections.ConfigDict({
      "paper": output("paper", "best", pair),
      "strong": output("strong", "best", pair),
  })
  s.jacobian = ml_collections.ConfigDict({
      "methods": adversarial, "num_examples": 500, "outputs": ("logits", "probs"),
      "norms": ("fro", "spectral"), "power_iters": 50, "temperature_examples": 1000,
  })
  return s
