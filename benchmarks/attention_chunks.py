"""Serving latency of SASA-ResNet-26 with and without chunks in its inference graph.

`local_attention_blocked(select_mask=True)` attends the heads in groups, and one head's
blocks in bands of block rows, whose logits per image hold at most `CHUNK_BYTES`
(`default_chunks`). This script times the same model (same weights) in chunks (the
default) and in one chunk (`CHUNK_BYTES` set past any layer's logits: the graph before
the chunks), in ONNX Runtime, LiteRT and Keras `predict_on_batch`, one thread each, beside
the conv twin: the models of `keras_sasa.serving.serving_model`, round-robin in one
process, median of RUNS calls.

    python benchmarks/attention_chunks.py benchmarks/results/attention_chunks.md

writes the Markdown table to the argument (and prints it).
"""

import math
import statistics
import sys
import tempfile

import _markdown
import numpy as np

from keras_sasa import serving
from keras_sasa.benchmark import machine_description
from keras_sasa.ops import blocked

SIZES = (224, 32)
BATCHES = (1, 8)
RUNS = {32: 20, 224: 8}
VARIANTS = {"chunks": blocked.CHUNK_BYTES, "one chunk": math.inf}


def _under(chunk_bytes, run):
    """`run`, called with `CHUNK_BYTES` set (Keras traces its graph at the first call)."""

    def call(x):
        blocked.CHUNK_BYTES = chunk_bytes
        return run(x)

    return call


def measure(size, directory):
    contenders = {}
    conv = serving.serving_model(size, attention=False)
    for runtime, run in serving.runners(conv, directory, threads=1).items():
        contenders[("conv twin", runtime)] = run
    weights = None
    for variant, chunk_bytes in VARIANTS.items():
        blocked.CHUNK_BYTES = chunk_bytes
        model = serving.serving_model(size, attention=True)
        if weights is None:
            weights = model.get_weights()
        model.set_weights(weights)
        for runtime, run in serving.runners(model, directory, threads=1).items():
            contenders[(variant, runtime)] = _under(chunk_bytes, run)
    rows = []
    for batch in BATCHES:
        x = np.random.default_rng(0).uniform(size=(batch, size, size, 3)).astype("float32")
        outputs = {key: run(x) for key, run in contenders.items()}
        times = serving.time_round_robin(contenders, x, RUNS[size])
        for runtime in serving.RUNTIMES:
            ms = {v: statistics.median(times[(v, runtime)]) for v in (*VARIANTS, "conv twin")}
            error = np.abs(outputs[("chunks", runtime)] - outputs[("one chunk", runtime)])
            rows.append(
                f"| {size}x{size} | {batch} | {runtime} | {ms['one chunk']:.1f} "
                f"| {ms['chunks']:.1f} | {ms['chunks'] / ms['one chunk']:.2f}x "
                f"| {ms['conv twin']:.1f} | {ms['one chunk'] / ms['conv twin']:.2f}x "
                f"| {ms['chunks'] / ms['conv twin']:.2f}x | {error.max():.1e} |"
            )
    blocked.CHUNK_BYTES = VARIANTS["chunks"]
    return rows


def table():
    lines = [
        f"One thread per runtime, median of round-robin calls; {machine_description()}.",
        "",
        "| input | batch | runtime | one chunk ms | chunks ms | chunks / one "
        "| conv twin ms | SASA / conv, one chunk | SASA / conv, chunks "
        "| max difference (class probabilities) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    serving.limit_threads(1)
    with tempfile.TemporaryDirectory() as directory:
        for size in SIZES:
            lines += measure(size, directory)
    return lines


if __name__ == "__main__":
    sys.exit(_markdown.main(sys.argv[1:], __file__, table))
