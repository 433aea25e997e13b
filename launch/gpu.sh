#!/usr/bin/env bash
# One GPU host: installs the CUDA build of the pinned JAX, prepares the study's dataset once, then
# runs a study (python -m uat_jax.study; rerun the same command to resume). With several GPUs the
# study starts one worker per GPU, each training its own runs (logs in ROOT/workers/); add
# --devices_per_run=K for runs over K GPUs each.
#   launch/gpu.sh STUDY_CONFIG ROOT       e.g. launch/gpu.sh cifar10_study workdirs/c10
set -euo pipefail
cd "$(dirname "$0")/.."
study="${1:?usage: launch/gpu.sh STUDY_CONFIG ROOT}"
root="${2:?usage: launch/gpu.sh STUDY_CONFIG ROOT}"
bash launch/install.sh --no-data
.venv/bin/pip install -q "jax[cuda12]==0.9.0"
.venv/bin/python -c "import jax; d = jax.devices(); print(len(d), 'devices:', d); assert d[0].platform == 'gpu', 'no GPU visible'"
bash launch/prepare_data.sh "$study"
mkdir -p "$root"
.venv/bin/python -m uat_jax.study --study="$study" --root="$root" 2>&1 | tee -a "$root/study.log"
