"""Exceptions `main` turns into one line and an exit status: UatError for bad input (its message
names the problem and the fix), Preempted for a run stopped by SIGTERM after checkpointing; and
what storage failures look like."""

import errno

# Storage failures: OSError numbers, and the texts of the errors that orbax and tensorstore raise
# for them (not OSError subclasses), each with the cause as error lines name it.
STORAGE_ERRNOS = {errno.ENOSPC: "no space left on device", errno.EDQUOT: "disk quota exceeded",
                  errno.EROFS: "read-only file system", errno.EIO: "input/output error"}
STORAGE_TEXTS = {"No space left on device": "no space left on device",
                 "RESOURCE_EXHAUSTED": "no space left on device",
                 "Disk quota exceeded": "disk quota exceeded",
                 "Read-only file system": "read-only file system",
                 "Input/output error": "input/output error"}


class UatError(ValueError):
  """Bad configuration, missing data or unusable files; `main` prints it as one line."""


class Preempted(Exception):
  """Training stopped on SIGTERM after saving a checkpoint at `step`; rerunning resumes."""

  EXIT_CODE = 143  # 128 + SIGTERM: what a job stopped by SIGTERM reports

  def __init__(self, step: int, path: str):
    super().__init__(f"preempted (SIGTERM): checkpoint saved at step {step} in {path}; rerun "
                     "the same command to resume")
    self.step = step
