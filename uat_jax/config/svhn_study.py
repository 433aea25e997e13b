r"""The paper's grid on SVHN for accelerators, with the Fashion-MNIST study's design.

  python -m uat_jax.study --study=svhn_study --root=/shared/svhn_study

Every run starts from svhn (PreAct ResNet-18, eps 8/255, PGD-10 of 2/255, SGD 0.01,
100 epochs decayed at 50% and 75%, 1,000 validation images, the best checkpoint by validation
PGD-20 accuracy every epoch). The grid is CIFAR-10's (cifar10_study,
uat_jax.config.accelerator_study): the sweep of beta / alpha on the validation split at
seed 0, seeds 0-2 for AT, AT+EntM and AT+LS and 0-1 for the others, the AT+EntM ablation at
seed 0, the presets at 2, 4, 8, 12 and 16/255 on 2,000 test images. Not run yet: the time per
run on a GPU is still to be measured (`--dry_run` estimates it).
"""

from uat_jax.config import accelerator_study


def get_config(arg=None):
  if arg not in (None, ""):
    raise ValueError(f"unknown study variant {arg!r}: this study has none")
  return accelerator_study.accelerator_study(
      "svhn", eps_grid=tuple(e / 255 for e in (2, 4, 8, 12, 16)), large_eps=16 / 255)
