#!/usr/bin/env bash
# The search's conv-stem trials lay within 1.7 points (5 of 287 validation images) of each
# other, so the window was settled with three seeds: the attention model at k = 3 and
# k = 7 (2 heads, conv stem, 30 epochs), each scored on 20% of the training split held
# out (--validation-split 0.2; the test split is not used). Copies the summaries here.
# The runs behind the committed results used the group strides of their time,
# (1, 2, 2, 2), pinned here (the small-image default is now (1, 1, 2, 2)).
set -euo pipefail
runs=${1:-runs/digits_window_selection}
here=$(dirname "$0")/results/digits_window_selection
mkdir -p "$here"
for k in 3 7; do
    python -m keras_sasa train --seeds 0,1,2 --kernel-size "$k" --validation-split 0.2 \
        --stage-strides 1,2,2,2 --output-dir "$runs/k$k" | tail -12 | tee "$here/k${k}_output.txt"
    cp "$runs/k$k/results.json" "$here/k${k}_results.json"
done
# The selection's numbers: the held-out accuracy after the last epoch of each run.
python - "$runs" <<'PY' | tee "$here/validation_accuracy.txt"
import csv, statistics, sys
for k in (3, 7):
    scores = []
    for seed in (0, 1, 2):
        with open(f"{sys.argv[1]}/k{k}/seed_{seed}/history.csv") as f:
            scores.append(100 * float(list(csv.DictReader(f))[-1]["val_accuracy"]))
    print(f"k={k}: held-out accuracy {statistics.fmean(scores):.2f} +- "
          f"{statistics.stdev(scores):.2f}% (seeds 0, 1, 2: "
          + ", ".join(f"{s:.2f}" for s in scores) + ")")
PY
