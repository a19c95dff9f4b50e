#!/usr/bin/env bash
# Learning-rate search for both models of the main job, each on its own: SASA-ResNet-26
# (conv stem, attention in every group) and its conv baseline, with the main job's
# settings and length (30 epochs, k=3, 2 heads, width 16, batch 64), six random learning
# rates from 0.0125 to 0.4 (log-uniform, the same draws for both, seed 0), scored on a
# held-out 20% of the training split. Writes the searches under $1 (default
# runs/digits_lr_search) and copies their settings and ranked results here.
# The runs behind the committed results used the group strides of their time,
# (1, 2, 2, 2), pinned here (the small-image default is now (1, 1, 2, 2)).
set -euo pipefail
out=${1:-runs/digits_lr_search}
here=$(dirname "$0")/results/digits_lr_search
for model in attention conv; do
  stages="1,2,3,4"
  if [ "$model" = conv ]; then stages=none; fi
  python -m keras_sasa tune --tuner random --max-trials 6 --epochs 30 \
      --stems conv_small --kernel-sizes 3 --num-heads 2 --attention-stages "$stages" \
      --stage-strides 1,2,2,2 --relative-position on --base-widths 16 --learning-rate 0.0125:0.4 \
      --weight-decay 0 --label-smoothing 0 --seed 0 \
      --output-dir "$out/$model" | tee "$here/${model}_output.txt"
  cp "$out/$model/search_settings.json" "$here/${model}_search_settings.json"
  cp "$out/$model/tuning_results.json" "$here/${model}_tuning_results.json"
done
