"""The study grid for accelerators (cifar10_study, cifar100_study, mnist_study, svhn_study):
the Fashion-MNIST study's design at accelerator scale, as a study config (uat_jax.study)."""

from __future__ import annotations

import ml_collections

from uat_jax.config import loading


def accelerator_study(config: str, eps_grid: tuple[float, ...], large_eps: float,
                      overrides: dict | None = None, validation_size: int = 0,
                      selection_every_steps: int = 0) -> ml_collections.ConfigDict:
  """A study config (python -m uat_jax.study) for a dataset's training config, with version 3 of
  the study plan's design (docs/study_plan.md, v3.5-v3.6) at accelerator scale: beta (EntM) /
  alpha (LS) swept on the validation split at seed 0 with the final schedule; every method with
  10 seeds (0-9), and the control AT+WA (AT with weight averaging, decay 0.999); the AT+EntM
  ablation (regularizer on clean / both, the attack on the regularized objective) with seeds
  0-2, exploratory. Model selection by APGD-CE (20 iterations) at the
  training eps on the held-out validation images after every epoch (the adversarially trained
  methods; the others by clean validation accuracy); the training config must hold out
  validation images. Evaluation on the whole test split with the paper, strong and adaptive
  presets over `eps_grid` at the best and the last checkpoint (the ablation at the training eps
  and `large_eps`); Jacobians of the adversarially trained runs on 500 test images. The report's
  primary estimand for claim 1 is the difference in gain at the last versus the best checkpoint
  (`estimand`), which is what "regularizes robust overfitting" means. `overrides` (shaped like
  the training config) apply to every run; `validation_size` and `selection_every_steps` (0: the
  recipe's held-out images and its evals.pgd period) set the model selection's."""
  adversarial = ("at", "at_entm", "at_ls")
  recipe = loading.from_file(config, "at")
  recipe.update(overrides or {})  # every run's settings, e.g. a training eps of its own
  train_eps = recipe.attack.eps
  s = ml_collections.ConfigDict()
  s.config = config
  # AT+WA, the non-uncertainty control for robust overfitting (plan v3.11): AT with an
  # exponential moving average of the weights, evaluated and selected in their place.
  s.methods = ("standard", "entm", "ls") + adversarial + ("at_wa",)
  s.method_variants = ml_collections.ConfigDict({"at_wa": {
      "method": "at", "overrides": {"optimizer": {"weight_average": 0.999}}}})
  s.seeds = ml_collections.ConfigDict({m: tuple(range(10)) for m in s.methods})
  s.baseline = "at"
  s.standard_baseline = "standard"
  s.large_eps = large_eps  # the large eps of claims 1 and 5
  # Claim 1's primary estimand: (M - AT at the last checkpoint) - (M - AT at the best), worst
  # case at the training eps (the report; "gain": M - AT at the best checkpoint, large eps).
  s.estimand = "last_vs_best"
  # Model selection by APGD-CE-20 on the validation images after every epoch.
  validation_size = validation_size or recipe.data.validation_size
  selection = {"every_steps": selection_every_steps or recipe.evals.pgd.every_steps,
               "preset": "", "eps": (train_eps,), "num_examples": validation_size,
               "checks": False, "only_robust": False, "select": "apgd_ce20"}
  s.overrides = ml_collections.ConfigDict({
      "data": {"validation_size": validation_size}, "evals": {"suite": selection},
      "best_checkpoint": {"metric": f"suite/worst_case@{train_eps:.4g}"}})
  s.overrides.update(overrides or {})
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
      "method": "at_entm", "seeds": (0, 1, 2),
      "variants": {"on_clean": {"regularizer": {"on": "clean"}},
                   "on_both": {"regularizer": {"on": "both"}},
                   "attack_objective": {"attack": {"loss": "objective"}}},
  })

  def output(preset, checkpoint, eps, checks=False):
    spec = {"preset": preset, "checkpoint": checkpoint, "eps": tuple(eps), "num_examples": 0,
            "batch_size": 500, "checks": checks}
    if preset in ("strong", "adaptive"):
      spec["only_robust"] = True
    return spec

  pair = (train_eps, large_eps)
  s.evals = ml_collections.ConfigDict({
      f"{preset}{suffix}": output(preset, checkpoint, eps_grid, checks=preset == "paper")
      for checkpoint, suffix in (("best", ""), ("last", "_last"))
      for preset in ("paper", "strong", "adaptive")})
  s.ablation_evals = ml_collections.ConfigDict({
      preset: output(preset, "best", pair) for preset in ("paper", "strong", "adaptive")})
  s.jacobian = ml_collections.ConfigDict({
      "methods": adversarial, "num_examples": 500, "outputs": ("logits", "probs"),
      "norms": ("fro", "spectral"), "power_iters": 50, "temperature_examples": 1000,
  })
  return s
