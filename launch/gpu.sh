#!/usr/bin/env bash
# One GPU host (all its GPUs: the train step is jit over a mesh of every visible device):
# installs the CUDA build of the pinned JAX, then runs the paper grid (launch/paper_grid.sh).
#   launch/gpu.sh [ROOT]        e.g. DATASETS="cifar10:preact_resnet18" SEEDS="0" launch/gpu.sh
set -euo pipefail
cd "$(dirname "$0")/.."
bash launch/install.sh
.venv/bin/pip install -q "jax[cuda12]==0.9.0"
.venv/bin/python -c "import jax; d = jax.devices(); print(len(d), 'devices:', d); assert d[0].platform == 'gpu', 'no GPU visible'"
exec bash launch/paper_grid.sh "${1:-workdirs/paper}"
