"""A config file for `--config`: the config a workdir was trained with.

`python -m uat_jax.main --mode=evaluate --workdir=W` uses it when no --config is given, as
`--config=<this file>:W`, so every override (`--config.evals.suite.preset=paper`) applies on top
of the run's own config.
"""

from uat_jax.config import loading
from uat_jax.errors import UatError


def get_config(workdir=None):
  if not workdir:
    raise UatError("the workdir config needs the workdir after the colon: "
                   "--mode=evaluate --workdir=W finds it by itself")
  return loading.load_workdir_config(workdir)
