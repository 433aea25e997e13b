"""The one exception type for bad input: its message is a single line naming problem and fix."""


class UatError(ValueError):
  """Bad configuration, missing data or unusable files; `main` prints it as one line."""
