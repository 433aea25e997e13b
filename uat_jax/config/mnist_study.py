r"""The paper's grid on MNIST for accelerators, with version 3 of the study plan's design.

  python -m uat_jax.study --study=mnist_study --root=/shared/mnist_study

Every run starts from mnist (Madry et al.'s recipe: Madry CNN, eps 0.3, PGD-40 of 0.01, Adam 1e-4,
80 epochs), with early stopping added for the study: 5,000 training images held out for validation,
APGD-CE-20 accuracy on them measured every epoch (430 steps), the best checkpoint kept by it (clean
accuracy for standard, EntM and LS). The grid is CIFAR-10's (cifar10_study,
uat_jax.config.accelerator_study): the sweep of beta / alpha on the validation split at seed 0,
seeds 0-9 for every method and the AT+WA control (weight averaging), the AT+EntM ablation at seeds
0-2, the paper, strong and adaptive presets at the best and last checkpoints on the whole test
split.

The eps grid is 0.1, 0.2, 0.3, 0.35 and 0.4, and the large eps (claims 1 and 5) is 0.4, not
twice the training eps: at eps >= 0.5 an attacker can turn every image into the same uniform
gray one (every pixel 0.5 is within reach), so no classifier can beat the most frequent class
and differences between methods say nothing. Not run yet (`--dry_run` estimates its training
time from the measured throughput table).
"""

from uat_jax.config import accelerator_study


def get_config(arg=None):
  if arg not in (None, ""):
    raise ValueError(f"unknown study variant {arg!r}: this study has none")
  return accelerator_study.accelerator_study(
      "mnist", eps_grid=(0.1, 0.2, 0.3, 0.35, 0.4), large_eps=0.4,
      validation_size=5000, selection_every_steps=430)
