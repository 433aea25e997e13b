#!/usr/bin/env bash
# Installs uat_jax (CPU) into ./.venv and Debian's Fashion-MNIST (the embedded dataset).
# Safe to rerun: it skips what is already there. Needs Python >= 3.11 as `python3` (or $PYTHON).
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

if [ ! -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then
  echo "Installing Debian's dataset-fashion-mnist (real Fashion-MNIST IDX files)..."
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq dataset-fashion-mnist >/dev/null
fi

PY="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  if ! "$PY" -m venv .venv 2>/dev/null; then
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq python3-venv >/dev/null
    "$PY" -m venv .venv
  fi
fi
.venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[dev,test]'
echo "uat_jax installed in .venv ($(.venv/bin/python -c 'import jax; print("jax", jax.__version__)'))"
