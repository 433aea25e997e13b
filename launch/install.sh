#!/usr/bin/env bash
# Installs uat_jax (CPU) into ./.venv and, where it can, Debian's Fashion-MNIST (the embedded
# dataset). Safe to rerun: it skips what is already there. Needs Python >= 3.11 as `python3` (or
# $PYTHON). Never asks for a password: the dataset is installed only as root or with
# passwordless sudo on a machine with apt; otherwise one line says how to get it.
#   bash launch/install.sh [--no-data]
set -euo pipefail
cd "$(dirname "$0")/.."

data=1
for arg in "$@"; do
  case "$arg" in
    --no-data) data=0 ;;
    *) echo "usage: bash launch/install.sh [--no-data]" >&2; exit 2 ;;
  esac
done

# Runs a command as root: directly, or with sudo when that needs no password; else fails.
as_root() {
  if [ "$(id -u)" -eq 0 ]; then
    "$@"
  elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
    sudo "$@"
  else
    return 1
  fi
}

FMNIST=/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
if [ "$data" -eq 1 ] && [ ! -f "$FMNIST" ]; then
  if command -v apt-get >/dev/null && as_root true; then
    echo "Installing Debian's dataset-fashion-mnist (real Fashion-MNIST IDX files)..."
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist >/dev/null
  else
    echo "Fashion-MNIST not installed: run 'sudo apt-get install dataset-fashion-mnist' (Debian/Ubuntu), or let TFDS download it on a machine with internet (docs/configuration.md, Data)."
  fi
fi

PY="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  if ! "$PY" -m venv .venv 2>/dev/null; then
    if command -v apt-get >/dev/null && as_root true; then
      as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
      "$PY" -m venv .venv
    else
      echo "error: '$PY -m venv' failed: install Python's venv module (Debian: python3-venv) or set PYTHON to a Python >= 3.11 that has it" >&2
      exit 1
    fi
  fi
fi
.venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip
# The tested versions (constraints.txt) of the core, the datasets, the figures and the tests.
.venv/bin/python -m pip install -q --disable-pip-version-check -c constraints.txt -e '.[data,plots,dev,test]'
# torchattacks (the parity tests' reference) without its pins: it asks for requests~=2.25.1 and
# torchvision, which its attacks never import, and would downgrade requests for everything else.
.venv/bin/python -m pip install -q --disable-pip-version-check --no-deps -c constraints.txt torchattacks
echo "uat_jax installed in .venv ($(.venv/bin/python -c 'import jax; print("jax", jax.__version__)'))"
