#!/usr/bin/env bash
# A Cloud TPU VM pod slice: a study (python -m uat_jax.study) on every host. For a grid of
# independent runs each host's study process starts one worker per chip (uat_jax.study.placement;
# --devices_per_run in STUDY_FLAGS for 2 or 4 chips per run), and all of them share ROOT's
# claims; no JAX job spans the hosts. MULTIHOST=1 instead joins every host into one JAX job
# (jax.distributed.initialize() finds them from the TPU metadata): one run over the whole slice.
#
#   launch/tpu_pod.sh TPU_NAME ZONE STUDY_CONFIG ROOT      # start, or resume after a stop
#   DRY_RUN=1 launch/tpu_pod.sh ...                        # print the commands, run nothing
#
# ROOT must be a path every worker sees (NFS / Filestore or gcsfuse mounted at the same path).
# The code shipped is `git archive HEAD` (never the working tree: no .venv, no workdirs); each
# worker gets a Python >= 3.11 virtual environment (uv installs one when the image's Python is
# older) with jax[tpu], and runs the study under nohup, logging to ROOT/tpu/<worker>.log, so a
# dropped ssh session does not stop it. Rerunning the same command resumes (finished pieces are
# skipped; training resumes from its checkpoints).
set -euo pipefail
TPU="${1:?usage: launch/tpu_pod.sh TPU_NAME ZONE STUDY_CONFIG ROOT}"
ZONE="${2:?usage: launch/tpu_pod.sh TPU_NAME ZONE STUDY_CONFIG ROOT}"
STUDY="${3:?usage: launch/tpu_pod.sh TPU_NAME ZONE STUDY_CONFIG ROOT}"
ROOT="${4:?usage: launch/tpu_pod.sh TPU_NAME ZONE STUDY_CONFIG ROOT}"
cd "$(dirname "$0")/.."
run() {
  if [ -n "${DRY_RUN:-}" ]; then printf '%q ' "$@"; echo; else "$@"; fi
}
archive="$(mktemp -d)/uat_jax.tar.gz"
run git archive --format=tar.gz -o "$archive" HEAD
run gcloud compute tpus tpu-vm scp --zone="$ZONE" --worker=all "$archive" "$TPU":~/uat_jax.tar.gz
# On each worker: unpack and make the environment once; then worker 0 prepares the dataset
# (one download into the shared TFDS dir, not one per host); then every worker starts the study
# in the background.
setup="set -euo pipefail
mkdir -p ~/uat_jax && tar -xzf ~/uat_jax.tar.gz -C ~/uat_jax && cd ~/uat_jax
if [ ! -x .venv/bin/python ]; then
  if python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    python3 -m venv .venv
  else
    python3 -m pip install -q --user uv && ~/.local/bin/uv venv --python 3.11 .venv
  fi
  .venv/bin/python -m pip install -q -e . 'jax[tpu]==0.9.0' || ~/.local/bin/uv pip install --python .venv/bin/python -e . 'jax[tpu]==0.9.0'
fi"
start="set -euo pipefail
cd ~/uat_jax && mkdir -p '$ROOT/tpu'
nohup .venv/bin/python -m uat_jax.study --study='$STUDY' --root='$ROOT' ${MULTIHOST:+--multihost} \
  >> '$ROOT/tpu/'\$(hostname).log 2>&1 < /dev/null &
echo \"started on \$(hostname): log $ROOT/tpu/\$(hostname).log\""
run gcloud compute tpus tpu-vm ssh "$TPU" --zone="$ZONE" --worker=all --command "$setup"
run gcloud compute tpus tpu-vm ssh "$TPU" --zone="$ZONE" --worker=0 \
  --command "cd ~/uat_jax && bash launch/prepare_data.sh '$STUDY'"
run gcloud compute tpus tpu-vm ssh "$TPU" --zone="$ZONE" --worker=all --command "$start"
