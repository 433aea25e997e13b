"""A config file for `--config`: the config a workdir was trained with.

`python -m uat_jax.main --mode=evaluate --workdir=W` uses it when no --config is given, as
`--config=uat_jax/workdir_config.py:W`, so every override (`--config.evals.suite.preset=paper`)
applies on top of the run's own config.
"""

from uat_jax import config_lib
from uat_jax.errors import UatError


def get_config(workdir=None):
  if not workdir:
    raise UatError("workdir_config.py needs the workdir after the colon: "
                   "--config=uat_jax/workdir_config.py:W")
  return config_lib.load_workdir_config(workdir)
