r"""The paper's grid on CIFAR-10 for accelerators, with version 3 of the study plan's design
(docs/study_plan.md, v3.6).

  python -m uat_jax.study --study=cifar10_study --root=/shared/cifar10_study --dry_run
  python -m uat_jax.study --study=cifar10_study --root=/shared/cifar10_study
  sbatch --array=0-7 launch/slurm.sbatch cifar10_study /shared/cifar10_study

Every run starts from cifar10 (Rice et al.'s PGD-AT recipe: PreAct ResNet-18, eps 8/255, PGD-10 of
2/255, SGD 0.1, 200 epochs decayed at 50% and 75%, 1,000 validation images). beta (EntM) and alpha
(LS) are swept on the validation split at seed 0 with the final schedule; every method and the
control AT+WA (AT with weight averaging, decay 0.999) run seeds 0-9; the best checkpoint is kept by
validation APGD-CE-20 accuracy at 8/255 after every epoch (clean accuracy for standard, EntM and
LS); the ablation of AT+EntM runs seeds 0-2. Evaluation on the whole 10,000-image test set with the
paper, strong and adaptive presets at 4, 8, 12 and 16/255, at the best and the last checkpoint;
Jacobians of the adversarially trained runs on 500 test images (uat_jax.config.accelerator_study).
The report's primary estimand for claim 1 is the difference in gain at the last versus the best
checkpoint; t-intervals and the Holm correction as for Fashion-MNIST. `--dry_run` states the
training cost from the measured throughput table (one H200: about 3,900 images/s for PreAct
ResNet-18 PGD-10 in fp32, so about 0.7 hours per 200-epoch AT run).

`:wrn` uses WRN-34-10 instead of PreAct ResNet-18.
"""

from uat_jax.config import accelerator_study
from uat_jax.errors import UatError


def get_config(arg=None):
  if arg not in (None, "", "wrn"):
    raise UatError(f"unknown study variant {arg!r}: use nothing or wrn")
  return accelerator_study.accelerator_study(
      "cifar10", eps_grid=tuple(e / 255 for e in (4, 8, 12, 16)),
      large_eps=16 / 255,
      overrides={"model": {"name": "wide_resnet" if arg == "wrn" else "preact_resnet18"}})
