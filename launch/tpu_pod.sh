#!/usr/bin/env bash
# A Cloud TPU VM pod slice: the same script on every worker, one process per host
# (jax.distributed.initialize() finds the other hosts from the TPU metadata; --multihost).
#   launch/tpu_pod.sh TPU_NAME ZONE [ROOT]
# ROOT must be a path every worker sees (mount NFS / Filestore or gcsfuse at the same path);
# checkpoints, config.json and metrics are written there (metrics and results by worker 0 only).
# The repository is copied to ~/uat_jax on every worker first.
set -euo pipefail
TPU="${1:?usage: launch/tpu_pod.sh TPU_NAME ZONE [ROOT]}"
ZONE="${2:?usage: launch/tpu_pod.sh TPU_NAME ZONE [ROOT]}"
ROOT="${3:-/mnt/shared/uat_jax/paper}"
cd "$(dirname "$0")/.."
gcloud compute tpus tpu-vm scp --recurse --zone="$ZONE" --worker=all . "$TPU":~/uat_jax
gcloud compute tpus tpu-vm ssh "$TPU" --zone="$ZONE" --worker=all --command "
  set -e; cd ~/uat_jax
  bash launch/install.sh
  .venv/bin/pip install -q 'jax[tpu]==0.9.0'
  MAIN_FLAGS=--multihost bash launch/paper_grid.sh '$ROOT'"
