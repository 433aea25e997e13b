r"""CIFAR10 (TFDS download), L-inf eps 8/255: the Rice et al. 2020 PGD-AT recipe.

PreAct ResNet-18 (set --config.model.name=wide_resnet for WRN-34-10), AT with 10 PGD steps of
2/255 at eps 8/255 (batch statistics during the attack, updates discarded), SGD 0.1 momentum 0.9,
weight decay 5e-4, batch 128, 200 epochs with the learning rate divided by 10 at 50% and 75%;
pad-4 crop + flip on device. Evaluate up to 16/255 (the paper's claim 1). References (not
targets): PreAct ResNet-18 PGD-10 robust 53.5% at its best epoch, 45.6% at the end (Rice et al.).
Early stopping as in Rice et al.: 1,000 training images are held out for validation, PGD-20
accuracy on them is measured every epoch (383 steps), and the best checkpoint by it is kept in
W/checkpoints_best (evaluate it with --config.evals.checkpoint=best).
Not measured here: about 26-90 s per PGD-10 step on 2 CPU cores, so use a GPU (launch/).

`,bf16`: bfloat16 compute (1.4-1.7x the float32 speed on an H200; docs/performance.md).
`,runlocal`: small CNN, 300 steps, PGD checks on the 1,000 validation images (a smoke run of the
code path).
"""

from uat_jax.config import base


def _dataset(c):
  base.resnet_at_recipe(c, "cifar10", learning_rate=0.1, num_epochs=200.0, num_train=50000)


def _runlocal(c):
  c.optimizer.learning_rate = 0.05


def get_config(arg=None):
  return base.build(arg, _dataset, _runlocal)
