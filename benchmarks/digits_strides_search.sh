#!/usr/bin/env bash
# The groups' strides for small images, searched with `tune` for both models of the main
# job, each on its own: the ImageNet strides (1, 2, 2, 2), which leave 8 x 8 digits 2 x 2
# maps in groups 3 and 4, against (1, 1, 2, 2) (maps of 8, 8, 4, 2 pixels a side), with
# the main job's other settings and length (30 epochs, conv_small stem, k=3, 2 heads,
# width 16, batch 64, learning rate 0.025), scored on a held-out 20% of the training
# split, seed 0 (two trials: the random tuner does not repeat a point). Writes the
# searches under $1 (default runs/digits_strides_search) and copies their settings and
# ranked results here.
set -euo pipefail
out=${1:-runs/digits_strides_search}
here=$(dirname "$0")/results/digits_strides_search
mkdir -p "$here"
for model in attention conv; do
  stages="1,2,3,4"
  if [ "$model" = conv ]; then stages=none; fi
  python -m keras_sasa tune --tuner random --max-trials 2 --epochs 30 \
      --stems conv_small --kernel-sizes 3 --num-heads 2 --attention-stages "$stages" \
      --stage-strides "1,2,2,2;1,1,2,2" --relative-position on --base-widths 16 \
      --learning-rate 0.025 --weight-decay 0 --label-smoothing 0 --seed 0 \
      --output-dir "$out/$model" | tee "$here/${model}_output.txt"
  cp "$out/$model/search_settings.json" "$here/${model}_search_settings.json"
  cp "$out/$model/tuning_results.json" "$here/${model}_tuning_results.json"
done
