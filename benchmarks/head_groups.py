"""Serving latency of SASA-ResNet-26 with and without head groups in its inference graph.

`local_attention_blocked(select_mask=True)` attends the heads in groups whose logits per
image hold at most `GROUP_BYTES` (`default_head_groups`). This script times the same
model (same weights) with the groups (the default) and with one group (`GROUP_BYTES`
set past any layer's logits, the graph before the groups), in ONNX Runtime, LiteRT and
Keras `predict_on_batch`, one thread each, beside the conv twin: the models of
`keras_sasa.serving.serving_model`, round-robin in one process, median of RUNS calls.

    python benchmarks/head_groups.py benchmarks/results/head_groups.md

writes the Markdown table to the argument (and prints it).
"""

import math
import statistics
import sys
import tempfile

import numpy as np

from keras_sasa import serving
from keras_sasa.benchmark import machine_description
from keras_sasa.ops import blocked

SIZES = (224, 32)
BATCHES = (1, 8)
RUNS = {32: 20, 224: 8}
VARIANTS = {"head groups": blocked.GROUP_BYTES, "one group": math.inf}


def _under(group_bytes, run):
    """`run`, called with `GROUP_BYTES` set (Keras traces its graph at the first call)."""

    def call(x):
        blocked.GROUP_BYTES = group_bytes
        return run(x)

    return call


def measure(size, directory):
    contenders = {}
    conv = serving.serving_model(size, attention=False)
    for runtime, run in serving.runners(conv, directory, threads=1).items():
        contenders[("conv twin", runtime)] = run
    weights = None
    for variant, group_bytes in VARIANTS.items():
        blocked.GROUP_BYTES = group_bytes
        model = serving.serving_model(size, attention=True)
        if weights is None:
            weights = model.get_weights()
        model.set_weights(weights)
        for runtime, run in serving.runners(model, directory, threads=1).items():
            contenders[(variant, runtime)] = _under(group_bytes, run)
    rows = []
    for batch in BATCHES:
        x = np.random.default_rng(0).uniform(size=(batch, size, size, 3)).astype("float32")
        outputs = {key: run(x) for key, run in contenders.items()}
        times = serving.time_round_robin(contenders, x, RUNS[size])
        for runtime in serving.RUNTIMES:
            ms = {v: statistics.median(times[(v, runtime)]) for v in (*VARIANTS, "conv twin")}
            error = np.abs(outputs[("head groups", runtime)] - outputs[("one group", runtime)])
            rows.append(
                f"| {size}x{size} | {batch} | {runtime} | {ms['one group']:.1f} "
                f"| {ms['head groups']:.1f} | {ms['head groups'] / ms['one group']:.2f}x "
                f"| {ms['conv twin']:.1f} | {ms['one group'] / ms['conv twin']:.2f}x "
                f"| {ms['head groups'] / ms['conv twin']:.2f}x | {error.max():.1e} |"
            )
    blocked.GROUP_BYTES = VARIANTS["head groups"]
    return rows


def main(argv):
    if len(argv) != 1:
        print("usage: python benchmarks/head_groups.py OUTPUT.md", file=sys.stderr)
        return 2
    lines = [
        f"One thread per runtime, median of round-robin calls; {machine_description()}.",
        "",
        "| input | batch | runtime | one group ms | head groups ms | groups / one "
        "| conv twin ms | SASA / conv, one group | SASA / conv, groups "
        "| max difference (class probabilities) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    serving.limit_threads(1)
    with tempfile.TemporaryDirectory() as directory:
        for size in SIZES:
            lines += measure(size, directory)
    text = "\n".join(lines) + "\n"
    with open(argv[0], "w") as f:
        f.write(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
