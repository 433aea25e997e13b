#!/usr/bin/env bash
# The study's pilot (docs/study_plan.md, "Regime"): AT, seed 0, under each candidate regime,
# reading validation numbers only. Resumable: rerun the same command after a kill.
#
#   bash launch/study_pilot.sh [ROOT]      # default ROOT: workdirs/study; logs in ROOT/pilot/*.log
set -euo pipefail
cd "$(dirname "$0")/.."
root="${1:-workdirs/study}"
mkdir -p "$root/pilot"
# candidate -> train_size epochs (3,125 steps of batch 128 each)
for candidate in "R1 10000 40" "R2 5000 80"; do
  read -r name size epochs <<<"$candidate"
  steps_per_epoch=$(( size / 128 ))
  .venv/bin/python -m uat_jax.main --config=fashion_mnist:at \
    --workdir="$root/pilot/$name" \
    --config.model.name=small_cnn \
    --config.data.validation_size=5000 --config.data.train_size="$size" \
    --config.num_epochs="$epochs" \
    --config.optimizer.name=sgd --config.optimizer.learning_rate=0.05 \
    --config.optimizer.momentum=0.9 --config.optimizer.weight_decay=5e-4 \
    --config.optimizer.schedule=piecewise \
    --config.evals.pgd.every_steps="$steps_per_epoch" --config.evals.pgd.num_examples=1000 \
    --config.best_checkpoint.metric=eval/pgd_accuracy \
    --config.log_every_steps="$steps_per_epoch" \
    --config.checkpoint_every_steps=$(( 5 * steps_per_epoch )) \
    >>"$root/pilot/$name.log" 2>&1
done
# The plan's rule over both runs: prints the table, writes ROOT/pilot/choice.json.
.venv/bin/python -c "import sys; from uat_jax.study import pilot; pilot.write_pilot_choice(sys.argv[1])" \
  "$root/pilot"
