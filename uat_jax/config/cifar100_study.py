r"""The paper's grid on CIFAR-100 for accelerators, with the Fashion-MNIST study's design.

  python -m uat_jax.study --study=cifar100_study --root=/shared/cifar100_study

Every run starts from cifar100 (Rice et al.'s PGD-AT recipe: PreAct ResNet-18, eps
8/255, PGD-10 of 2/255, SGD 0.1, 200 epochs decayed at 50% and 75%, 1,000 validation images,
the best checkpoint by validation PGD-20 accuracy every epoch). The grid is CIFAR-10's
(cifar10_study, uat_jax.config.accelerator_study): the sweep of beta / alpha on
the validation split at seed 0, seeds 0-2 for AT, AT+EntM and AT+LS and 0-1 for the others,
the AT+EntM ablation at seed 0, the presets at 2, 4, 8, 12 and 16/255 on 2,000 test images.
Not run yet: the time per run on a GPU is still to be measured (`--dry_run` estimates it).

`:wrn` uses WRN-34-10 instead of PreAct ResNet-18.
"""

from uat_jax.config import accelerator_study


def get_config(arg=None):
  if arg not in (None, "", "wrn"):
    raise ValueError(f"unknown study variant {arg!r}: use nothing or wrn")
  return accelerator_study.accelerator_study(
      "cifar100", eps_grid=tuple(e / 255 for e in (2, 4, 8, 12, 16)),
      large_eps=16 / 255,
      overrides={"model": {"name": "wide_resnet" if arg == "wrn" else "preact_resnet18"}})
