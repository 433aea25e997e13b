r"""Command line entry.

  python -m uat_jax.main --config=RECIPE:METHOD --workdir=W   # train or resume; fashion_mnist:at
  python -m uat_jax.main --mode=evaluate --workdir=W [--config.evals.suite.preset=paper]
  python -m uat_jax.main --mode=jacobian --workdir=W_at --workdir=W_at_entm   # compare norms
  python -m uat_jax.main --multihost ...   # one process per host (TPU pod slice, SLURM)

Every config field can be overridden, e.g. `--config.regularizer.beta=0.5 --config.attack.eps=0.2`.
`--mode=evaluate` and `--mode=jacobian` without --config use the config the (first) workdir was
trained with (W/config.json).
"""

from __future__ import annotations

import os

from absl import flags, logging
from ml_collections import config_flags

from uat_jax import cli
from uat_jax import config as config_lib
from uat_jax.errors import UatError

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "A packaged recipe by name (fashion_mnist, "
                                "cifar10, ...) or a config file, then :METHOD[,runlocal], e.g. "
                                "fashion_mnist:at_entm",
                                lock_config=True)
flags.DEFINE_multi_string("workdir", None, "Directory for checkpoints, metrics and results "
                          "(--mode=jacobian: repeat it to compare workdirs).")
flags.DEFINE_enum("mode", "train", ["train", "evaluate", "jacobian"],
                  "train: train or resume in --workdir; evaluate: the evaluators of "
                  "config.evals.on_evaluate (default: the attack suite, config.evals.suite) on "
                  "the newest checkpoint of --workdir; jacobian: input-Jacobian norms "
                  "(config.evals.jacobian) of one or more workdirs compared.")
cli.define_multihost_flags()
flags.DEFINE_bool("dry_run", False, "--mode=train: print the run's steps, FLOPs per step and "
                  "estimated hours on the first device of the measured throughput table (the "
                  "user's own after `uat-jax bench`); train nothing.")
flags.mark_flags_as_required(["config", "workdir"])


def main():
  import jax  # after flag parsing, so XLA_FLAGS set by the caller apply
  from uat_jax import estimate, evaluate, evaluators, files, jacobian_compare, sharding, train

  if cli.multihost_args():
    sharding.initialize_distributed(*cli.multihost_args())
    logging.info("Process %d of %d", jax.process_index(), jax.process_count())

  logging.info("JAX %s on %s: %s", jax.__version__, jax.default_backend(), jax.devices())
  sharding.compilation_cache(os.path.join(files.user_cache_dir(), "jax"))
  config = FLAGS.config
  workdirs = FLAGS.workdir
  chief = sharding.is_chief()
  if FLAGS.mode == "jacobian":
    comparison = jacobian_compare.analyze_workdirs(config, workdirs)
    if chief:
      print(jacobian_compare.format_comparison(comparison), flush=True)
      print(f"wrote {os.path.join(config.evals.output_dir or workdirs[0], 'jacobian')}",
            flush=True)
    return
  if len(workdirs) != 1:
    raise UatError(f"--mode={FLAGS.mode} takes one --workdir, got {len(workdirs)}")
  if FLAGS.mode == "evaluate":
    out = evaluators.evaluate_workdir(config, workdirs[0])
    if chief:
      for result in out["suites"].values():
        print(evaluate.format_table(result), flush=True)
      suites = tuple(f"{config_lib.scalar_prefix(n, 'suite')}/" for n in out["suites"])
      for name, value in out["scalars"].items():
        if not name.startswith(suites):
          print(f"{name}: {value:.6g}", flush=True)
      base = config.evals.output_dir or workdirs[0]
      for name in config_lib.names(config.evals.on_evaluate):
        print(f"wrote {evaluators.output_dir(config, name, base)}", flush=True)
    return
  if FLAGS.dry_run:
    print(estimate.summary(config, estimate.estimate(config)), flush=True)
    return
  results = train.train_and_evaluate(config, workdirs[0],
                                     evaluators=evaluators.for_training(config))
  if chief and "eval/clean_accuracy" in results:
    print(evaluators.format_summary(config, results), flush=True)


def _with_workdir_config(argv):
  """--mode=evaluate|jacobian without --config: the (first) workdir's own config
  (uat_jax/config/workdir.py)."""
  if (cli.flag_value(argv, "mode") not in ("evaluate", "jacobian")
      or cli.flag_value(argv, "config") is not None):
    return argv
  workdir = cli.flag_value(argv, "workdir")
  if not workdir:
    return argv  # absl reports the missing --workdir
  return [argv[0], f"--config={config_lib.WORKDIR_CONFIG}:{workdir}", *argv[1:]]


def _parse_flags(argv):
  """absl's parser, with bad flags and config overrides reported as one line."""
  return cli.parse_flags(cli.with_fractions(_with_workdir_config(argv)), "config")


def run():
  cli.run_app(main, flags_parser=_parse_flags)


if __name__ == "__main__":
  run()
