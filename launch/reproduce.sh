#!/usr/bin/env bash
# The paper's study at CPU scale on the embedded Fashion-MNIST under the pre-registered plan
# (docs/study_plan.md), end to end and resumable: sweeps (validation split) -> train 6 methods x
# seeds and the ablation -> evaluate best and last checkpoints (paper, strong presets) ->
# input-Jacobian norms with the temperature control -> results/fashion_mnist/REPORT.md (paired
# tests, figures, claim verdicts). Rerunning skips finished pieces. About 6 hours of training on
# 2 CPU cores (the sweep's committed choice is reused: sweep_from), then about 12 hours of
# evaluation (fashion_mnist_study).
#
#   launch/reproduce.sh                 # the study: workdirs/study, results/fashion_mnist
#   launch/reproduce.sh --quick         # the same pipeline on a tiny budget (minutes; CI runs it):
#                                       # workdirs/study_quick, results/fashion_mnist_quick
#   ROOT=... OUT=... launch/reproduce.sh [--quick]   # other places
set -euo pipefail
cd "$(dirname "$0")/.."
STUDY=fashion_mnist_study
ROOT="${ROOT:-workdirs/study}"
OUT="${OUT:-results/fashion_mnist}"
if [ "${1:-}" = "--quick" ]; then
  STUDY="$STUDY:quick"
  ROOT="${ROOT%/}"; [ "$ROOT" = "workdirs/study" ] && ROOT=workdirs/study_quick
  [ "$OUT" = "results/fashion_mnist" ] && OUT=results/fashion_mnist_quick
  shift
fi
PY="${PYTHON:-.venv/bin/python}"
[ -x "$PY" ] || { bash launch/install.sh; PY=.venv/bin/python; }
"$PY" -m uat_jax.study --study="$STUDY" --root="$ROOT" "$@"
README=()  # the full study at its usual place also writes its verdicts into the README
[ "$OUT" = "results/fashion_mnist" ] && README=(--readme=README.md)
"$PY" -m uat_jax.report --study="$STUDY" --root="$ROOT" --out="$OUT" "${README[@]}"
echo "report: $OUT/REPORT.md"
