r"""MNIST (TFDS download), L-inf eps 0.3: the Madry et al. 2018 MNIST recipe.

Madry CNN, AT with 40 PGD steps of 0.01 at eps 0.3, Adam 1e-4, batch 128, 80 epochs (close to
Madry's 100k steps of batch 50). Reference (not a target): Madry 98.5% clean / 88.5% AutoAttack.
Not measured yet (the development machine had no MNIST download).

`,runlocal`: small CNN, 300 steps, PGD-10 training, eval on 1,000 test images.
"""

from uat_jax.config import base


def _dataset(c):
  c.data.name = "mnist"
  c.model.name = "madry_cnn"
  c.num_epochs = 80.0
  c.optimizer.name = "adam"
  c.optimizer.learning_rate = 1e-4
  c.attack.eps = 0.3
  c.attack.step_size = 0.01
  c.attack.steps = 40
  c.evals.pgd.step_size = 0.01
  c.evals.pgd.steps = 100


def _runlocal(c):
  c.optimizer.learning_rate = 1e-3
  c.attack.steps = 10
  c.attack.step_size = 0.075
  c.evals.pgd.steps = 20
  c.evals.pgd.step_size = 0.075


def get_config(arg=None):
  return base.build(arg, _dataset, _runlocal)
