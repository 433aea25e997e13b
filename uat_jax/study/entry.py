r"""The paper's study as one resumable pipeline (docs/reproducing.md, docs/study_plan.md).

  python -m uat_jax.study --study=fashion_mnist_study[:quick] --root=workdirs/study
  python -m uat_jax.study --study=cifar10_study --root=R --dry_run

Several processes started with the same command share the pieces (uat_jax.study.scheduler).
On a host with several accelerators the command starts one worker per device (or per
--devices_per_run devices), each running its own pieces (uat_jax.study.placement); --multihost
instead makes all processes one JAX job, for a single run too large for one device.
"""

from __future__ import annotations

import os
import sys

from absl import flags
from ml_collections import config_flags

from uat_jax import cli

FLAGS = flags.FLAGS


def _define_flags():
  config_flags.DEFINE_config_file("study", None, "Study config: a packaged one by name "
                                  "(fashion_mnist_study, cifar10_study, ...; fashion_mnist_study:"
                                  "quick) or a file", lock_config=True)
  flags.DEFINE_string("root", None, "Directory holding the study's workdirs.")
  cli.define_multihost_flags()
  flags.DEFINE_bool("dry_run", False, "Print every training run with its FLOPs per step, hours "
                    "from the measured throughput table and the grid's wall-clock on --devices "
                    "devices; train nothing.")
  flags.DEFINE_integer("devices", 1, "--dry_run: the number of devices the grid shares.")
  flags.DEFINE_integer("devices_per_run", 1, "Devices each training run uses: on a host with more "
                       "accelerators, one worker process per group of this many runs the study's "
                       "pieces side by side (uat_jax.study.placement); --dry_run assumes it too.")
  flags.DEFINE_bool("worker", False, "Set by the launcher on the processes it starts: run the "
                    "pieces on the devices this process sees, start no workers.")
  flags.DEFINE_string("device", None, "--dry_run: the measured device to estimate for (default: "
                      "the user's own after `uat-jax bench`, else the first of the table).")
  flags.DEFINE_string("shard", "", "i/n: run only piece k with k mod n == i (several jobs, e.g. "
                      "a SLURM array: --shard=$SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT).")
  flags.DEFINE_string("only", "", "Comma-separated shell patterns of piece names (as the log "
                      "names them): run only those pieces and what they need, e.g. "
                      "--only='evaluate * strong_last'.")
  flags.mark_flags_as_required(["study", "root"])


def main():
  from uat_jax.study import placement
  if not (FLAGS.dry_run or FLAGS.worker or cli.multihost_args()):
    envs = placement.plan(os.environ, FLAGS.devices_per_run)
    if envs:  # several device groups on this host: one worker each, sharing the claims
      code = placement.launch(placement.worker_command(sys.argv), envs,
                              os.path.join(FLAGS.root, "workers"))
      from uat_jax.study import pieces, scheduler
      listing = pieces.pieces(FLAGS.study, FLAGS.root)
      print(scheduler.status_table({p.name: "done" if p.done() else "not finished (see "
                                    f"{FLAGS.root}/workers/)" for p in listing
                                    if p.name != "choose"}), flush=True)
      if code:
        raise SystemExit(code)
      return
  from uat_jax import sharding  # after flag parsing, so XLA_FLAGS set by the caller apply
  from uat_jax.study import cost, scheduler
  if cli.multihost_args():
    sharding.initialize_distributed(*cli.multihost_args())
  if FLAGS.dry_run:
    if FLAGS.devices < 1 or FLAGS.devices_per_run < 1 or FLAGS.devices % FLAGS.devices_per_run:
      cli.fail(f"--devices={FLAGS.devices} is not a multiple of --devices_per_run="
               f"{FLAGS.devices_per_run} (both at least 1)")
    print(cost.dry_run(FLAGS.study, FLAGS.root, FLAGS.devices, FLAGS.devices_per_run,
                       FLAGS.device), flush=True)
    return
  scheduler.run(FLAGS.study, FLAGS.root, FLAGS.shard, only=FLAGS.only)


def cli_main():
  _define_flags()
  cli.run_app(main, flags_parser=lambda argv: cli.parse_flags(argv, "study"))


if __name__ == "__main__":
  cli_main()
