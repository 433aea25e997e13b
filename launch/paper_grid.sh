#!/usr/bin/env bash
# The paper's grid on accelerators, one `python -m uat_jax.main` per piece, resumable:
# for each dataset:model, every method and seed: train -> evaluate (paper preset with a transfer
# attack from the other seed, strong preset) -> input-Jacobian comparison against AT.
#
#   launch/paper_grid.sh [ROOT]            (default ROOT=workdirs/paper)
# Environment: DATASETS ("cifar10:preact_resnet18 cifar10:wide_resnet svhn:preact_resnet18
# mnist:madry_cnn"), METHODS ("standard entm ls at at_entm at_ls"), SEEDS ("0 1"), PY
# (.venv/bin/python), MAIN_FLAGS (e.g. --multihost: launch/tpu_pod.sh and launch/slurm.sbatch set
# it), EXTRA (more flags for training, e.g. --config.num_epochs=100).
# Every process of a multi-host job runs this same script in lockstep, so ROOT must be on a
# filesystem all hosts share (NFS, Filestore, gcsfuse) at the same path.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="${1:-workdirs/paper}"
PY="${PY:-.venv/bin/python}"
DATASETS="${DATASETS:-cifar10:preact_resnet18 cifar10:wide_resnet svhn:preact_resnet18 mnist:madry_cnn}"
METHODS="${METHODS:-standard entm ls at at_entm at_ls}"
SEEDS="${SEEDS:-0 1}"
read -r -a main_flags <<< "${MAIN_FLAGS:-}"
read -r -a extra <<< "${EXTRA:-}"
main() { "$PY" -m uat_jax.main "${main_flags[@]}" "$@"; }
first_seed="${SEEDS%% *}"

for ds_model in $DATASETS; do
  ds="${ds_model%%:*}"; model="${ds_model##*:}"
  config="configs/${ds/svhn_cropped/svhn}.py"
  jacobian_workdirs=()
  for method in $METHODS; do
    for seed in $SEEDS; do  # train every seed first: each is the other's transfer surrogate
      w="$ROOT/$ds/$model/${method}_s$seed"
      [ -f "$w/eval/strong/results.json" ] && continue
      echo "== train $w"
      main --config="$config:$method" --config.model.name="$model" --config.seed="$seed" \
        --workdir="$w" "${extra[@]}"
    done
    for seed in $SEEDS; do
      w="$ROOT/$ds/$model/${method}_s$seed"
      other=""
      for s in $SEEDS; do [ "$s" != "$seed" ] && [ -z "$other" ] && other="$ROOT/$ds/$model/${method}_s$s"; done
      for preset in paper strong; do
        [ -f "$w/eval/$preset/results.json" ] && continue
        echo "== evaluate $w ($preset)"
        surrogate=()
        [ "$preset" = paper ] && [ -n "$other" ] && surrogate=(--config.evals.suite.surrogate_workdir="$other")
        main --mode=evaluate --workdir="$w" --config.evals.suite.preset="$preset" \
          --config.evals.suite.output="$preset" "${surrogate[@]}"
      done
      if [ "$seed" = "$first_seed" ]; then
        if [ "$method" = at ]; then jacobian_workdirs=(--workdir="$w" "${jacobian_workdirs[@]}")
        else jacobian_workdirs+=(--workdir="$w"); fi
      fi
    done
  done
  first="${jacobian_workdirs[0]#--workdir=}"
  if [ ! -f "$first/jacobian/comparison.csv" ]; then
    echo "== jacobian $ds/$model"
    main --mode=jacobian "${jacobian_workdirs[@]}"
  fi
done
echo "paper grid finished: $ROOT"
