r"""SVHN (TFDS svhn_cropped download), L-inf eps 8/255.

PreAct ResNet-18, AT with 10 PGD steps of 2/255 at eps 8/255, SGD 0.01 (AT on SVHN is unstable at
0.1), momentum 0.9, weight decay 5e-4, batch 128, 100 epochs, piecewise decay at 50% / 75%;
pad-4 crop without flips (digits). Not measured yet (the development machine had no SVHN download).
Early stopping as in Rice et al.: 1,000 training images are held out for validation, PGD-20
accuracy on them is measured every epoch (565 steps), and the best checkpoint by it is kept in
W/checkpoints_best (evaluate it with --config.evals.checkpoint=best).

`,runlocal`: small CNN, 300 steps, PGD checks on the 1,000 validation images.
"""

from uat_jax.config import base


def _dataset(c):
  base.resnet_at_recipe(c, "svhn_cropped", learning_rate=0.01, num_epochs=100.0,
                        num_train=73257)


def get_config(arg=None):
  return base.build(arg, _dataset)
