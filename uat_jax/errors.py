"""Exceptions `main` turns into one line and an exit status: UatError for bad input (its message
names the problem and the fix), Preempted for a run stopped by SIGTERM after checkpointing."""


class UatError(ValueError):
  """Bad configuration, missing data or unusable files; `main` prints it as one line."""


class Preempted(Exception):
  """Training stopped on SIGTERM after saving a checkpoint at `step`; rerunning resumes."""

  EXIT_CODE = 143  # 128 + SIGTERM: what a job stopped by SIGTERM reports

  def __init__(self, step: int, path: str):
    super().__init__(f"preempted (SIGTERM): checkpoint saved at step {step} in {path}; rerun "
                     "the same command to resume")
    self.step = step
