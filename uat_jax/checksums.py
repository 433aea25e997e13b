"""Checksum records of checkpoints: W/checksums/<checkpoints or checkpoints_best>/<step>.json
holds the sha256 of every data file of a step, written as the save completes (orbax's
post-finalization callback, before the step is renamed into place: a checkpoint that exists
complete has its record), and verified before a restore. A record missing (uat_jax 0.1 wrote
them at the next save, or it was deleted) or damaged is reported by name, and the checkpoint
then relies on orbax's own checks as it is restored; it is never moved aside for a bad record.
"""

from __future__ import annotations

import functools
import glob
import hashlib
import json
import os

import jax
import orbax.checkpoint as ocp
from absl import logging

from uat_jax import files

CHECKSUM_DIR = "checksums"
TMP_SUFFIX = ".orbax-checkpoint-tmp"  # orbax's name for a checkpoint still being written


class CorruptCheckpoint(Exception):
  """A checkpoint whose files do not match the checksums recorded when it was saved."""


def manifest_path(mngr: ocp.CheckpointManager, step: int) -> str:
  return _record_path(str(mngr.directory), step)


def _record_path(checkpoint_dir: str, step: int) -> str:
  d = os.path.abspath(checkpoint_dir)
  return os.path.join(os.path.dirname(d), CHECKSUM_DIR, os.path.basename(d), f"{step}.json")


def _write_record(path: str, step: int, step_dir: str) -> None:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  files.write_atomic(path, json.dumps({"step": step, "sha256": _digests(step_dir)}, indent=1,
                                      sort_keys=True))


def record_completed(checkpoint_dir: str) -> None:
  """orbax's post-finalization callback: the step being written is complete in its temporary
  folder and about to be renamed into place, so its record exists before the checkpoint does
  (a kill right after the save leaves both or neither). Process 0 only."""
  if jax.process_index() != 0:
    return
  for tmp in glob.glob(os.path.join(checkpoint_dir, f"*{TMP_SUFFIX}*")):
    stem = os.path.basename(tmp).split(".")[0]
    if stem.isdigit():
      _write_record(_record_path(checkpoint_dir, int(stem)), int(stem), tmp)


def async_options(checkpoint_dir: str) -> ocp.AsyncOptions:
  return ocp.AsyncOptions(post_finalization_callback=functools.partial(record_completed,
                                                                       checkpoint_dir))


# Written or rewritten by orbax as it renames a step into place (after the record): not recorded.
# The metadata file is JSON that orbax parses on every restore, so damage to it shows anyway.
METADATA_FILE = "_CHECKPOINT_METADATA"
UNRECORDED = ("commit_success.txt", METADATA_FILE)


def _digests(step_dir: str) -> dict[str, str]:
  out = {}
  for root, _, names in os.walk(step_dir):
    for name in names:
      if name in UNRECORDED and root == step_dir:
        continue
      path = os.path.join(root, name)
      h = hashlib.sha256()
      with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
          h.update(block)
      out[os.path.relpath(path, step_dir)] = h.hexdigest()
  return out


def write_checksums(mngr: ocp.CheckpointManager) -> None:
  """Records the checksums of every complete step that has none (call it when no save is in
  flight: after wait_until_finished) and drops those of steps that are gone. Process 0 only."""
  if jax.process_index() != 0:
    return
  mngr.reload()
  steps = set(mngr.all_steps())
  folder = os.path.dirname(manifest_path(mngr, 0))
  os.makedirs(folder, exist_ok=True)
  for step in steps:
    path = manifest_path(mngr, step)
    if not os.path.exists(path):
      _write_record(path, step, os.path.join(str(mngr.directory), str(step)))
  for name in os.listdir(folder):
    stem = name[:-5] if name.endswith(".json") else ""
    if stem.isdigit() and int(stem) not in steps:
      os.remove(os.path.join(folder, name))


_UNVERIFIED_WARNED: set[str] = set()


def verify(mngr: ocp.CheckpointManager, step: int) -> None:
  """Raises CorruptCheckpoint when a file of `step` is missing or differs from its recorded
  checksum; without a record (a checkpoint from before checksums), warns once per directory."""
  path = manifest_path(mngr, step)
  if not os.path.exists(path):
    if str(mngr.directory) not in _UNVERIFIED_WARNED:
      _UNVERIFIED_WARNED.add(str(mngr.directory))
      logging.warning("checkpoint %d in %s has no checksum record (written by uat_jax 0.1, "
                      "whose records were written at the next save, or its record was deleted):"
                      " restoring it with orbax's own checks only", step, mngr.directory)
    return
  try:
    with open(path) as f:
      recorded = json.load(f)["sha256"]
    if not isinstance(recorded, dict):
      raise ValueError("no table of checksums")
  except (OSError, ValueError, KeyError, TypeError) as e:
    # The record, not the checkpoint, is damaged: the data is verified by restoring it (orbax
    # decodes and checks every array), and nothing is moved aside for it.
    logging.warning("the checksum record %s is damaged (%s): checkpoint %d is verified by "
                    "restoring it instead; to rebuild it, delete it and rerun the training "
                    "command (training writes every missing record)", path,
                    f"{type(e).__name__}: {e}"[:120], step)
    return
  step_dir = os.path.join(str(mngr.directory), str(step))
  found = _digests(step_dir)
  for name, digest in sorted(recorded.items()):
    if name in UNRECORDED:  # (records of uat_jax 0.1 listed them)
      continue
    if name not in found:
      raise CorruptCheckpoint(f"file {name} of the checkpoint is missing")
    if found[name] != digest:
      raise CorruptCheckpoint(f"file {name} does not match the checksum recorded when it was "
                              "saved (the data changed on disk)")
  if not os.path.exists(os.path.join(step_dir, METADATA_FILE)):
    logging.warning("checkpoint %d in %s lacks orbax's %s file, but every data file matches its "
                    "recorded checksum: restoring it", step, mngr.directory, METADATA_FILE)
