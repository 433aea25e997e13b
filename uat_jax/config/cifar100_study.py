r"""The paper's grid on CIFAR-100 for accelerators, with version 3 of the study plan's design.

  python -m uat_jax.study --study=cifar100_study --root=/shared/cifar100_study

Every run starts from cifar100 (Rice et al.'s PGD-AT recipe: PreAct ResNet-18, eps 8/255, PGD-10 of
2/255, SGD 0.1, 200 epochs decayed at 50% and 75%, 1,000 validation images, the best checkpoint by
validation APGD-CE-20 accuracy every epoch). The grid is CIFAR-10's (cifar10_study,
uat_jax.config.accelerator_study): the sweep of beta / alpha on the validation split at seed 0,
seeds 0-9 for every method and the AT+WA control (weight averaging), the AT+EntM ablation at seeds
0-2, the paper, strong and adaptive presets at 4, 8, 12 and 16/255 at the best and last checkpoints
on the whole test split. Not run yet (`--dry_run` estimates its training time from the measured
throughput table).

`:wrn` uses WRN-34-10 instead of PreAct ResNet-18.
"""

from uat_jax.config import accelerator_study
from uat_jax.errors import UatError


def get_config(arg=None):
  if arg not in (None, "", "wrn"):
    raise UatError(f"unknown study variant {arg!r}: use nothing or wrn")
  return accelerator_study.accelerator_study(
      "cifar100", eps_grid=tuple(e / 255 for e in (4, 8, 12, 16)),
      large_eps=16 / 255,
      overrides={"model": {"name": "wide_resnet" if arg == "wrn" else "preact_resnet18"}})
