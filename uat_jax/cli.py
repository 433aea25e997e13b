"""What the command-line entry points (uat_jax.main, uat_jax.study, uat_jax.report) share: log
filtering, the one-line error exit, and running an absl main with both."""

from __future__ import annotations

import logging as pylogging
import os
import re
import sys
import threading
from typing import Optional

from absl import app, flags, logging

from uat_jax import config as config_lib
from uat_jax.errors import STORAGE_ERRNOS, STORAGE_TEXTS, Preempted, UatError


class OwnInfoOnly(pylogging.Filter):
  """Keeps INFO lines from uat_jax and clu (progress, metrics, ETA); WARNING+ from the rest."""

  def filter(self, record):
    if record.levelno >= pylogging.WARNING:
      return True
    return any(part in record.pathname for part in ("uat_jax", "/clu/"))


def _is_storage_noise(text: str) -> bool:
  """A storage failure (errors.STORAGE_TEXTS) as orbax, tensorstore and asyncio report it from
  their background threads; the main thread reports it as one `error:` line, so their
  tracebacks are noise."""
  return any(t in text for t in STORAGE_TEXTS) or "Event loop is closed" in text


class QuietStorageErrors(pylogging.Filter):
  """Drops background-thread error records (with their tracebacks) about a storage failure."""

  def filter(self, record):
    if record.levelno < pylogging.ERROR or "uat_jax" in record.pathname:
      return True
    text = record.getMessage()
    if record.exc_info and record.exc_info[1] is not None:
      text += f" {type(record.exc_info[1]).__name__}: {record.exc_info[1]}"
    return not _is_storage_noise(text)


def _quiet_hook(default):
  """An excepthook (sys, threading or unraisable) that prints nothing for storage-failure noise
  (tensorstore's callbacks report theirs as unraisable exceptions, or through sys.excepthook)
  and defers to `default` otherwise."""
  def hook(*args):
    # threading's and the unraisable hook take one argument with .exc_value; sys's takes three.
    exc = args[0].exc_value if len(args) == 1 else args[1]
    if exc is not None and _is_storage_noise(f"{type(exc).__name__}: {exc}"):
      return
    default(*args)
  return hook


# After an error, the interpreter's exit waits for background threads (orbax's writers, after
# an I/O error, may never finish): past this many seconds the process exits anyway.
EXIT_GRACE_SECONDS = float(os.environ.get("UAT_EXIT_GRACE_SECONDS", "60"))


def flag_value(argv, name):
  """The value of --name=V or --name V in argv, else None."""
  for i, a in enumerate(argv):
    if a.startswith(f"--{name}="):
      return a.split("=", 1)[1]
    if a == f"--{name}" and i + 1 < len(argv):
      return argv[i + 1]
  return None


def with_config_files(argv, name: str):
  """argv with --<name>=RECIPE[:arg] (a packaged recipe's name, e.g. fashion_mnist:at_entm)
  replaced by the recipe's file, which ml_collections' config flag loads; a path stays as it
  is. A value that is neither is one `error:` line naming the recipes."""
  out = list(argv)
  for i, a in enumerate(out):
    if a.startswith(f"--{name}="):
      head, value = a.split("=", 1)
    elif a == f"--{name}" and i + 1 < len(out):
      head, value = None, out[i + 1]
    else:
      continue
    spec, sep, arg = value.partition(":")
    resolved = config_lib.path_of(spec) + sep + arg  # a UatError names the recipes
    if head is None:
      out[i + 1] = resolved
    else:
      out[i] = f"{head}={resolved}"
  return out


FRACTION = re.compile(r"(?<![\w.])(\d+(?:\.\d*)?)\s*/\s*(\d+(?:\.\d*)?)(?![\w.])")
FRACTION_FIELDS = ("eps", "step_size")  # fields on the [0, 1] image scale, often k/255


def with_fractions(argv):
  """argv with fractions such as 8/255 in --config.<...>.eps and .step_size overrides (alone or
  in a list, `4/255,8/255` or `(4/255, 8/255)`) written as decimals, which the config parser
  reads; a list given without parentheses gets them."""
  out = []
  for a in argv:
    head, sep, value = a.partition("=")
    field = head.rsplit(".", 1)[-1]
    if sep and head.startswith("--config.") and field in FRACTION_FIELDS and "/" in value:
      value = FRACTION.sub(lambda m: repr(float(m.group(1)) / float(m.group(2))), value)
      if "," in value and not value.lstrip().startswith(("(", "[")):
        value = f"({value})"
      a = f"{head}={value}"
    out.append(a)
  return out


def parse_flags(argv, name: Optional[str] = None, flag_values=None):
  """absl's parser (of `flag_values`, default absl's FLAGS) for an entry point, with a bad or
  missing flag raised as a UatError of one line (run_app prints it, exit status 2); with `name`,
  the entry point's config-file flag --<name> (a packaged recipe's name or a file, with :arg),
  whose bad argument or override, or a file that fails to load, is one too."""
  flag_values = flags.FLAGS if flag_values is None else flag_values
  try:
    if name is None:
      return flag_values(argv)
    argv = flag_values(with_config_files(argv, name))
    loaded = getattr(flag_values, name)  # None: not given (where optional)
    if loaded is not None:
      loaded.keys()  # a config file that failed to load raises OSError on first use
    return argv
  except UatError:
    raise
  except OSError as e:
    root = e
    while root.__cause__ or root.__context__:
      root = root.__cause__ or root.__context__
    if isinstance(root, UatError):
      raise UatError(str(root)) from None
    example = "fashion_mnist_study" if name == "study" else "fashion_mnist:at_entm"
    raise UatError(f"could not load the --{name} file ({type(root).__name__}: "
                   f"{str(root).strip().splitlines()[-1]}); pass e.g. --{name}={example}"
                   ) from None
  except flags.Error as e:
    text = str(e)
    if "UatError: " in text:  # raised by get_config(arg) inside the config file
      raise UatError(text.rsplit("UatError: ", 1)[1].splitlines()[0]) from None
    raise UatError(f"{text.splitlines()[0]} (see --helpfull)") from None
  except (AttributeError, KeyError) as e:  # config_flags: an override names no config field
    detail = str(e.args[0] if e.args else e).replace("\\n", " ")
    raise UatError(f"unknown config field ({detail.replace(chr(92), '').strip(chr(39))}); list "
                   "the fields and their values with `uat-jax config show RECIPE:METHOD`"
                   ) from None
  except (TypeError, ValueError) as e:  # config_flags: a value of the wrong type
    raise UatError(f"bad config override: {e}") from None


def define_multihost_flags() -> None:
  """--multihost and its three flags, for entry points that can run as one of several
  processes (uat_jax.main, uat_jax.study)."""
  flags.DEFINE_bool("multihost", False, "Several processes (one per TPU host, or per GPU under "
                    "SLURM): call jax.distributed.initialize first (TPU VMs and SLURM are "
                    "detected; elsewhere pass the three flags below).")
  flags.DEFINE_string("coordinator_address", None, "--multihost: host:port of process 0.")
  flags.DEFINE_integer("num_processes", None, "--multihost: number of processes.")
  flags.DEFINE_integer("process_id", None, "--multihost: this process's index.")


def multihost_args() -> tuple | None:
  """(coordinator_address, num_processes, process_id) with --multihost, else None."""
  f = flags.FLAGS
  return (f.coordinator_address, f.num_processes, f.process_id) if f.multihost else None


def exit_bounded(code: int):
  """sys.exit(code), with a watchdog that ends the process if the normal exit (joining
  non-daemon threads, atexit handlers) takes longer than EXIT_GRACE_SECONDS."""
  sys.stdout.flush()
  sys.stderr.flush()
  watchdog = threading.Timer(EXIT_GRACE_SECONDS, os._exit, args=(code,))
  watchdog.daemon = True
  watchdog.start()
  sys.exit(code)


def fail(message: str):
  """Prints `error: <message>` as one line on stderr and exits with status 2."""
  print(f"error: {' '.join(str(message).split())}", file=sys.stderr)
  exit_bounded(2)


def run_app(main, flags_parser=None):
  """app.run(main) for an entry point without positional arguments: uat_jax's log filter, a
  UatError as one `error:` line with exit status 2, and a Preempted run as one line with exit
  status 143 (the checkpoint is saved; rerunning resumes)."""
  def wrapped(argv):
    if len(argv) > 1:
      raise UatError(f"unexpected arguments {argv[1:]}: every setting is a flag "
                     "(--name=value, e.g. --config.seed=1)")
    # TensorFlow (TensorBoard summaries, TFDS) loads later: its C++ INFO and WARNING lines
    # (a oneDNN notice every run, event-file flush warnings on a full disk) stay out of the log.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    logging.get_absl_handler().addFilter(OwnInfoOnly())
    logging.get_absl_handler().addFilter(QuietStorageErrors())
    sys.excepthook = _quiet_hook(sys.excepthook)
    threading.excepthook = _quiet_hook(threading.excepthook)
    sys.unraisablehook = _quiet_hook(sys.unraisablehook)
    main()

  try:
    if flags_parser is None:
      app.run(wrapped)
    else:
      app.run(wrapped, flags_parser=flags_parser)
  except UatError as e:
    fail(str(e))
  except OSError as e:  # storage failures outside checkpoint writes (metrics, reports)
    if e.errno not in STORAGE_ERRNOS:
      raise
    fail(f"{e.strerror} while writing {e.filename or 'a file'}: free space or choose another "
         "directory, then rerun the same command (checkpoints completed before are kept)")
  except Preempted as e:
    print(e, file=sys.stderr)
    exit_bounded(Preempted.EXIT_CODE)
