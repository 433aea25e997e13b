r"""The paper's grid on CIFAR-10 for accelerators, with the Fashion-MNIST study's design.

  python -m uat_jax.study --study=cifar10_study --root=/shared/cifar10_study
  sbatch --array=0-7 launch/slurm.sbatch cifar10_study /shared/cifar10_study

Every run starts from cifar10 (Rice et al.'s PGD-AT recipe: PreAct ResNet-18, eps
8/255, PGD-10 of 2/255, SGD 0.1, 200 epochs decayed at 50% and 75%, 1,000 validation images,
the best checkpoint by validation PGD-20 accuracy every epoch). beta (EntM) and alpha (LS) are
swept on the validation split at seed 0 with the final schedule; AT, AT+EntM and AT+LS run
seeds 0-2, standard, EntM and LS seed 0-1; the ablation of AT+EntM runs seed 0. Evaluation on
the first 2,000 test images with the paper and strong presets at 2, 4, 8, 12 and 16/255 (the
best checkpoint), 8 and 16/255 (the last checkpoint and the ablation); Jacobians of the
adversarially trained runs on 500 test images (uat_jax.config.accelerator_study). Not run
yet: the time per run on a GPU is still to be measured (about 270 images/s for PreAct ResNet-18
PGD-10 in fp32 in Rice et al.'s logs would make a 200-epoch AT run about 10 hours).

`:wrn` uses WRN-34-10 instead of PreAct ResNet-18.
"""

from uat_jax.config import accelerator_study


def get_config(arg=None):
  if arg not in (None, "", "wrn"):
    raise ValueError(f"unknown study variant {arg!r}: use nothing or wrn")
  return accelerator_study.accelerator_study(
      "cifar10", eps_grid=tuple(e / 255 for e in (2, 4, 8, 12, 16)),
      large_eps=16 / 255,
      overrides={"model": {"name": "wide_resnet" if arg == "wrn" else "preact_resnet18"}})
