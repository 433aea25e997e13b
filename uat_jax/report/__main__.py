"""python -m uat_jax.report (uat_jax/report/entry.py)."""

from uat_jax.report import entry

__doc__ = entry.__doc__  # what --help shows

if __name__ == "__main__":
  entry.cli_main()
