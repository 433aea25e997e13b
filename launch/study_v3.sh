#!/usr/bin/env bash
# Version 3 of the Fashion-MNIST study's plan (docs/study_plan.md, v3.3, v3.4 and v3.8),
# resumable: rerun the same command after a kill, or on a new machine (the pieces resume from
# ROOT if it survived, else start again).
#
#  1. The pilot for a regime where AT overfits: candidates P1-P4 in order, AT seeds 0 and 1,
#     until one meets the plan's rule (runs in ROOT/pilot; the outcome of every candidate run so
#     far in results/fashion_mnist/data/pilot_v3.json, which REPORT.md states).
#  2. The runs the convergence check and claim 4 need, trained again (ROOT/study), and their new
#     outputs: `adaptive` on the best checkpoints of AT, AT+EntM and AT+LS seeds 0-1, the last
#     checkpoints of standard, EntM and LS at eps 0.05.
#  3. The report admits the new pieces of the runs whose training curves repeat the committed
#     ones exactly, and rebuilds results/fashion_mnist/REPORT.md.
#
#   bash launch/study_v3.sh          # ROOT=workdirs/study_v3; logs in ROOT/pilot.log, ROOT/study.log
#   nice -n 19 nohup bash launch/study_v3.sh >/dev/null 2>&1 &    # in the background
#
# Cost on 2 CPU cores: docs/reproducing.md ("Version 3").
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="${ROOT:-workdirs/study_v3}"
PY="${PYTHON:-.venv/bin/python}"
[ -x "$PY" ] || { bash launch/install.sh; PY=.venv/bin/python; }
mkdir -p "$ROOT"
echo "$(date -u +%FT%TZ) pilot" >>"$ROOT/pilot.log"
"$PY" -m uat_jax.study.pilot --root="$ROOT/pilot" --out=results/fashion_mnist/data/pilot_v3.json \
  >>"$ROOT/pilot.log" 2>&1
{
  echo "$(date -u +%FT%TZ) convergence check and claim 4"
  "$PY" -m uat_jax.study --study=fashion_mnist_study --root="$ROOT/study" \
    --only='evaluate *_s[01] adaptive_check*,evaluate * *_last_small'
  "$PY" -m uat_jax.report --merge --study=fashion_mnist_study --root="$ROOT/study" \
    --out=results/fashion_mnist --readme=README.md
  echo "$(date -u +%FT%TZ) done"
} >>"$ROOT/study.log" 2>&1
