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


def _fail(message: str):
  print(f"error: {' '.join(str(message).split())}", file=sys.stderr)
  sys.exit(2)


def _parse_flags(argv):
  """absl's parser, with bad flags and config overrides reported as one line."""
  try:
    argv = FLAGS(argv)
    FLAGS.config.method  # a config file that failed to load raises OSError on first use
    return argv
  except OSError as e:
    root = e
    while root.__cause__ or root.__context__:
      root = root.__cause__ or root.__context__
    if isinstance(root, UatError):
      _fail(str(root))
    _fail(f"could not load the --config file ({type(root).__name__}: "
          f"{str(root).strip().splitlines()[-1]}); pass e.g. "
          "--config=configs/fashion_mnist.py:at_entm")
  except flags.Error as e:
    text = str(e)
    if "UatError: " in text:  # raised by get_config(arg) inside the config file
      _fail(text.rsplit("UatError: ", 1)[1].splitlines()[0])
    _fail(f"{text.splitlines()[0]} (see --helpfull)")
  except (AttributeError, KeyError) as e:  # config_flags: an override names no config field
    detail = str(e.args[0] if e.args else e).replace("\\n", " ")
    _fail(f"unknown config field ({detail.replace(chr(92), '').strip(chr(39))}); list the "
          "fields with --helpfull or read the config file")
  except (TypeError, ValueError) as e:  # config_flags: a value of the wrong type
    _fail(f"bad config override: {e}")


def run():
  try:
    app.run(main, flags_parser=_parse_flags)
  except UatError as e:
    _fail(str(e))


if __name__ == "__main__":
  run()
