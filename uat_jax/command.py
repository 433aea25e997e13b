"""The `uat-jax` command: one entry for every subcommand (the `python -m` forms keep working).

  uat-jax train --config=fashion_mnist:at_entm,runlocal --workdir=W   # train or resume
  uat-jax train --config=cifar10:at --workdir=W --dry_run             # steps, FLOPs, hours
  uat-jax evaluate --workdir=W [--config.evals.suite.preset=strong]   # the attack suite
  uat-jax jacobian --workdir=W1 --workdir=W2                          # Jacobian norms compared
  uat-jax study --study=fashion_mnist_study --root=R [--dry_run]      # the paper's study
  uat-jax report --from_data --out=results/fashion_mnist              # its report
  uat-jax bench [--cases=...]                                         # measure this device
  uat-jax config list                                                 # the packaged recipes
  uat-jax config show RECIPE[:METHOD[,runlocal]]                      # every field and value

Each subcommand's own flags: `uat-jax SUBCOMMAND --help`.
"""

from __future__ import annotations

import sys
from typing import Optional

from uat_jax import config as config_lib
from uat_jax import tables
from uat_jax.config import reference
from uat_jax.errors import UatError

MODES = ("train", "evaluate", "jacobian")
SUBCOMMANDS = MODES + ("study", "report", "bench", "config")


def recipe_list() -> str:
  """The packaged recipes with the first line of each one's description."""
  rows = []
  for name in config_lib.recipes():
    doc = (config_lib.describe(name) or "").strip().splitlines()
    rows.append([name, doc[0] if doc else ""])
  return tables.markdown_table(["recipe", "what it is"], rows)


def recipe_fields(spec: str) -> str:
  """Every field of a recipe (its defaults and the method after the colon applied) with its
  value and meaning, from the same source as docs/config_reference.md."""
  name, _, arg = spec.partition(":")
  c = config_lib.from_file(name, arg or None)
  header = f"{spec}: every field is a flag, --config.<field>=<value>"
  return header + "\n\n" + tables.markdown_table(["field", "value", "meaning"], reference.rows(c))


def config_command(args: list[str]) -> int:
  if args[:1] == ["list"] and len(args) == 1:
    print(recipe_list())
    return 0
  if args[:1] == ["show"] and len(args) == 2:
    print(recipe_fields(args[1]))
    return 0
  raise UatError("usage: uat-jax config list | uat-jax config show RECIPE[:METHOD] "
                 "(e.g. uat-jax config show fashion_mnist:at_entm)")


def main(argv: Optional[list[str]] = None) -> int:
  argv = list(sys.argv if argv is None else argv)
  sub = argv[1] if len(argv) > 1 else "--help"
  if sub in ("-h", "--help", "help"):
    print(__doc__.strip())
    return 0
  if sub not in SUBCOMMANDS:
    print(f"error: unknown subcommand {sub!r}: choose one of {', '.join(SUBCOMMANDS)} "
          "(uat-jax --help)", file=sys.stderr)
    return 2
  rest = argv[2:]
  # Each subcommand's module defines its absl flags when imported, and two of them define some of
  # the same flags: only the one asked for is imported.
  if sub in MODES:
    from uat_jax import main as entry
    sys.argv = [f"uat-jax {sub}", f"--mode={sub}", *rest]
    entry.run()
  elif sub == "study":
    from uat_jax.study import entry
    sys.argv = ["uat-jax study", *rest]
    entry.cli_main()
  elif sub == "report":
    from uat_jax.report import entry
    sys.argv = ["uat-jax report", *rest]
    entry.cli_main()
  elif sub == "bench":
    from uat_jax import benchmark
    return benchmark.main(rest)
  else:
    try:
      return config_command(rest)
    except UatError as e:
      print(f"error: {e}", file=sys.stderr)
      return 2
  return 0


def run() -> None:
  sys.exit(main())


if __name__ == "__main__":
  run()
