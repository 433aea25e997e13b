r"""The study's report: REPORT.md, its figures and the small JSON results it is built from.

  python -m uat_jax.report --study=fashion_mnist_study --root=workdirs/study \
      --out=results/fashion_mnist
  python -m uat_jax.report --from_data --out=results/fashion_mnist   # from the committed JSON
  python -m uat_jax.report --from_data --out=results/fashion_mnist --readme=README.md
  python -m uat_jax.report --merge --study=fashion_mnist_study --root=workdirs/study_v3 \
      --out=results/fashion_mnist      # add runs trained again that repeat the committed ones

`collect` copies from the study's workdirs into OUT/data/ only what the report needs; `build`
writes OUT/REPORT.md and OUT/figures/*.png from OUT/data alone; with --readme, the verdict lines
also go into the README (between two marker lines). The analysis, the tests and every verdict
threshold are those of the pre-registered plan (docs/study_plan.md). Pieces the study has not
finished yet are reported as pending, never guessed.
"""

from __future__ import annotations

import os
import tempfile

from absl import flags
from ml_collections import config_flags

from uat_jax import cli
from uat_jax.errors import UatError
from uat_jax.report import merge, readme
from uat_jax.report.build import build

FLAGS = flags.FLAGS


def _define_flags():
  config_flags.DEFINE_config_file("study", None, "The study config the results come from (a "
                                  "packaged one by name, or a file).", lock_config=True)
  flags.DEFINE_string("root", None, "The study's root (workdirs); not needed with --from_data.")
  flags.DEFINE_string("out", None, "Where REPORT.md, figures/ and data/ go.")
  flags.DEFINE_bool("from_data", False, "Rebuild the report from OUT/data only.")
  flags.DEFINE_bool("merge", False, "Add to OUT/data the pieces of ROOT's runs that OUT/data "
                    "lacks, only for runs whose training curves repeat the committed ones "
                    "exactly (runs trained again after a workdir was lost); nothing in OUT/data "
                    "is replaced.")
  flags.DEFINE_string("readme", None, "Also write the verdicts into this README, between its "
                      f"lines {readme.README_BEGIN!r} and {readme.README_END!r}.")
  flags.mark_flags_as_required(["out"])


def main():
  data_dir = os.path.join(FLAGS.out, "data")
  if FLAGS.readme:
    readme.readme_parts(FLAGS.readme)  # a README without its verdict block fails before any work
  if not FLAGS.from_data:
    if FLAGS.study is None or FLAGS.root is None:
      raise UatError("pass --study and --root (or --from_data to rebuild from OUT/data)")
    from uat_jax.report import collect  # deferred: reading workdirs loads JAX (Jacobian files)
    if FLAGS.merge:
      with tempfile.TemporaryDirectory() as fresh:
        count = collect.collect(FLAGS.study, FLAGS.root, fresh)
        done = merge.merge(fresh, data_dir)
      for line in done["refused"]:
        print(f"refused {line}")
      print(f"merged {len(done['added'])} pieces from {len(done['admitted'])} runs: "
            f"{', '.join(done['added']) or 'none'}")
    else:
      count = collect.collect(FLAGS.study, FLAGS.root, data_dir)
    print(f"collected {count['found']} results ({count['missing']} pending)")
  build(data_dir, FLAGS.out, FLAGS.readme)
  print(f"wrote {os.path.join(FLAGS.out, 'REPORT.md')}")
  if FLAGS.readme:
    print(f"wrote the verdicts into {FLAGS.readme}")


def cli_main():
  _define_flags()
  cli.run_app(main, flags_parser=lambda argv: cli.parse_flags(argv, "study"))


if __name__ == "__main__":
  cli_main()
