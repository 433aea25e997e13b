r"""Fashion-MNIST (the embedded default: Debian's dataset-fashion-mnist), L-inf eps 0.1.

Reproduces the paper's setting at CPU scale: AT with eps 0.1 (10 PGD steps of eps/4) on the
Madry CNN, evaluated up to 2x the training eps (0.2, the analogue of 16/255 for 8/255 AT).
Adam 1e-3, batch 128, 20 epochs (9,380 steps). The paper's own hyper-parameters are unknown
(docs/paper.md); every choice is a field. Measured on 2 CPU cores (jax 0.9.0): 1.0 AT step/s
with the Madry CNN, so about 2.6 hours for an AT method; a GPU takes minutes.

  python -m uat_jax.main --config=fashion_mnist:at_entm --workdir=workdirs/fm_at_entm

Methods (the part after the colon): standard, entm, ls, at, at_entm, at_ls.
`,runlocal` (e.g. `:at_entm,runlocal`): small CNN, 300 steps, eval on 1,000 test images;
measured on 2 CPU cores (jax 0.9.0): about 1-2 minutes for AT methods, 15 s for standard.
"""

from uat_jax.config import base


def _dataset(c):
  c.data.name = "fashion_mnist"
  c.model.name = "madry_cnn"
  c.num_epochs = 20.0
  c.optimizer.name = "adam"
  c.optimizer.learning_rate = 1e-3
  c.attack.eps = 0.1
  c.attack.step_size = 0.025
  c.attack.steps = 10
  c.evals.pgd.step_size = 0.025


def get_config(arg=None):
  return base.build(arg, _dataset)
