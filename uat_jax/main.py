r"""Command line entry: `python -m uat_jax.main --config=configs/X.py:METHOD --workdir=W`.

Trains (or resumes) a run; every config field can be overridden, e.g.
`--config.regularizer.beta=0.5 --config.attack.eps=0.2`.
"""

from __future__ import annotations

import logging as pylogging
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from uat_jax.errors import UatError

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Config file, e.g. configs/fashion_mnist.py:at_entm",
                                lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and results.")
flags.DEFINE_enum("mode", "train", ["train"], "What to run.")
flags.mark_flags_as_required(["config", "workdir"])


class _OwnInfoOnly(pylogging.Filter):
  """Keeps INFO lines from uat_jax and clu (progress, metrics, ETA); WARNING+ from the rest."""

  def filter(self, record):
    if record.levelno >= pylogging.WARNING:
      return True
    return any(part in record.pathname for part in ("uat_jax", "/clu/"))


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  logging.get_absl_handler().addFilter(_OwnInfoOnly())
  import jax  # after flag parsing, so XLA_FLAGS set by the caller apply

  from uat_jax import train
  logging.info("JAX %s on %s: %s", jax.__version__, jax.default_backend(), jax.devices())
  config = FLAGS.config
  results = train.train_and_evaluate(config, FLAGS.workdir)
  print(train.format_summary(config, results), flush=True)


def run():
  try:
    app.run(main)
  except UatError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
  run()
