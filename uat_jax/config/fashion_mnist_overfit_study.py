r"""Version 3.5 of the Fashion-MNIST study's plan (docs/study_plan.md): the study in the regime
where the v3 pilot found AT to overfit, named by the pilot's candidate.

  python -m uat_jax.study --study=fashion_mnist_overfit_study:P4 --root=R --dry_run
  python -m uat_jax.study --study=fashion_mnist_overfit_study:P4 --root=R
  python -m uat_jax.report --study=fashion_mnist_overfit_study:P4 --root=R --out=OUT

It runs only if a candidate meets the pilot's rule (results/fashion_mnist/data/pilot_v3.json
names it). Regime: the candidate's model, training images, steps and eps
(uat_jax.config.fashion_mnist_regimes), SGD 0.05 with momentum 0.9 and weight decay 5e-4 divided
by 10 at 50% and 75%, PGD-10 of step eps / 4, 5,000 held-out validation images. Runs: AT, AT+EntM,
AT+LS and the control AT+WA (AT with weight averaging, decay 0.999) with seeds 0-7; standard,
EntM and LS with seeds 0-4; beta and alpha from the sweep of 2026-11-25 (`sweep_from`, the
committed results/fashion_mnist/data/sweep.json; run from the repository's root); no ablation.
Model selection by APGD-CE-20 on the validation images every 5% of training (clean accuracy on
them, from the same pass, for standard, EntM and LS). Evaluation on the first 5,000 test images
with the paper, strong and adaptive presets at the training eps and twice it, at the best and
the last checkpoint; Jacobians of the adversarially trained runs on 500 test images. The primary
estimand of claim 1 is the difference in gain at the last versus the best checkpoint.
"""

from uat_jax.config import accelerator_study, fashion_mnist_regimes

SEEDS_AT, SEEDS_STANDARD = tuple(range(8)), tuple(range(5))
SWEEP_FROM = "results/fashion_mnist/data/sweep.json"


def get_config(arg=None):
  every = fashion_mnist_regimes.validation_every(arg)  # a UatError for an unknown candidate
  eps = fashion_mnist_regimes.CANDIDATES[arg][3]
  s = accelerator_study.accelerator_study(
      "fashion_mnist", eps_grid=(eps, 2 * eps), large_eps=2 * eps,
      overrides=fashion_mnist_regimes.overrides(arg),
      validation_size=fashion_mnist_regimes.VALIDATION, selection_every_steps=every)
  for m in s.methods:
    s.seeds[m] = SEEDS_AT if m.startswith("at") else SEEDS_STANDARD
  for output in s.evals.values():
    output.num_examples = 5000
  for m in ("standard", "entm", "ls"):  # clean accuracy from the selection pass (no PGD-20 pass)
    s.method_overrides[m].best_checkpoint.metric = "suite/clean_accuracy"
  s.sweep_from = SWEEP_FROM
  s.ablation.variants = {}
  s.ablation_evals = {}
  return s
