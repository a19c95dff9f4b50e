#!/usr/bin/env bash
# The main job's table (README; docs/small_images.md): the default model beside its conv
# baseline on digits (offline), over seeds 0, 1 and 2, and a quarter-length run (8 of 30
# epochs), with today's defaults. Copies the results to benchmarks/results/main_job/.
set -euo pipefail
runs=${1:-runs/main_job}
here=$(dirname "$0")/results/main_job
python -m keras_sasa train --compare-baseline --seeds 0,1,2 --output-dir "$runs/seeds" \
    | tee "$here/seeds_output.txt"
cp "$runs/seeds/results.json" "$here/seeds_results.json"
python -m keras_sasa train --compare-baseline --seeds 0,1,2 --epochs 8 \
    --output-dir "$runs/quarter" | tee "$here/quarter_output.txt"
cp "$runs/quarter/results.json" "$here/quarter_results.json"
