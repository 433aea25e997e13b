"""python -m uat_jax.study (uat_jax/study/entry.py)."""

from uat_jax.study import entry

__doc__ = entry.__doc__  # what --help shows

if __name__ == "__main__":
  entry.cli_main()
