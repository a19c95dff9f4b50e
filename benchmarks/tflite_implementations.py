"""LiteRT latency of the two TFLite exports of SASA-ResNet-26: blocked against unrolled.

`export.to_tflite` converts the attention on the blocked implementation (its inference
graph, the select mask); `implementation="unrolled"` converts the sum over window offsets.
Both are builtin ops only. The models are `keras_sasa.serving.serving_model`'s (32 x 32
small stems, k = 3; 224 x 224 conv stem, k = 7), timed with their conv twin round-robin at
batch 1, LiteRT with one thread, median of RUNS calls.

    python benchmarks/tflite_implementations.py benchmarks/results/tflite_implementations.md

writes the Markdown table to the argument (and prints it).
"""

import statistics
import sys

import _markdown
import numpy as np

from keras_sasa import export
from keras_sasa import serving
from keras_sasa.benchmark import machine_description

SIZES = (32, 224)
RUNS = {32: 20, 224: 6}


def measure(size):
    x = np.random.default_rng(0).uniform(size=(1, size, size, 3)).astype("float32")
    conv = serving.serving_model(size, attention=False)
    model = serving.serving_model(size, attention=True)
    expected = model.predict_on_batch(x)
    contenders = {"conv twin": serving.litert_runner(export.to_tflite(conv), threads=1)}
    sizes_mb, errors = {}, {}
    for implementation in ("blocked", "unrolled"):
        flatbuffer = export.to_tflite(model, implementation=implementation)
        run = serving.litert_runner(flatbuffer, threads=1)
        sizes_mb[implementation] = len(flatbuffer) / 1e6
        errors[implementation] = float(np.abs(run(x) - expected).max())
        contenders[implementation] = run
    times = serving.time_round_robin(contenders, x, RUNS[size])
    conv_ms = statistics.median(times["conv twin"])
    rows = []
    for name in ("blocked", "unrolled", "conv twin"):
        ms = statistics.median(times[name])
        extra = f"{sizes_mb[name]:.2f} MB | {errors[name]:.1e}" if name in sizes_mb else "- | -"
        rows.append(f"| {size}x{size} | {name} | {ms:.1f} | {ms / conv_ms:.2f}x | {extra} |")
    return rows


def table():
    lines = [
        f"LiteRT, one thread, batch 1, median of round-robin calls; {machine_description()}.",
        "",
        "| input | TFLite attention | median ms | vs conv twin | file "
        "| max error vs Keras (class probabilities) |",
        "|---|---|---|---|---|---|",
    ]
    for size in SIZES:
        lines += measure(size)
    return lines


if __name__ == "__main__":
    sys.exit(_markdown.main(sys.argv[1:], __file__, table))
