#!/usr/bin/env bash
# Prepares a study's dataset once (TFDS download and preparation, or the local Fashion-MNIST
# files), before a multi-host run, so that the processes only read it.
#   bash launch/prepare_data.sh STUDY_CONFIG        e.g. cifar10_study
set -euo pipefail
cd "$(dirname "$0")/.."
study="${1:?usage: bash launch/prepare_data.sh STUDY_CONFIG}"
.venv/bin/python - "$study" <<'PY'
import sys
from uat_jax import config as config_lib, data
study = config_lib.from_file(sys.argv[1])
config = config_lib.from_file(study.config, study.methods[0])
for split in ("train", "test"):
  s = data.load_split(config.data, split)
  print(f"{config.data.name} {split}: {len(s.labels)} examples ready")
PY
