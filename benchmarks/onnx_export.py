"""ONNX export measured: file size, export time and ONNX Runtime vs Keras, per model.

Writes a Markdown table (docs/performance.md, "ONNX export") to stdout and to
benchmarks/results/onnx_export.md (or the path given). Each model is exported with
`keras_sasa.export.to_onnx` (traced at batch 1) and run by ONNX Runtime at batch 3 on
random images in [0, 1).

    python benchmarks/onnx_export.py [PATH]
"""

import os
import platform
import sys
import tempfile
import time

import keras
import numpy as np
import onnxruntime

import keras_sasa
from keras_sasa import export


RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "onnx_export.md")


def attention_layers(implementation):
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(16, 1)(inputs)
    x = keras_sasa.LocalSelfAttention2D(16, 7, 4, implementation=implementation)(x)
    x = keras_sasa.LocalSelfAttention2D(
        32, 7, 4, strides=2, dilation_rate=2, border="zeros", implementation=implementation
    )(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(10)(x))


def resnet26(stem, size):
    return keras_sasa.models.SASAResNet26(
        input_shape=(size, size, 3), stem=stem, base_width=16, num_heads=4, classes=10
    )


MODELS = [
    (
        "32x32, 1x1 conv, 2 x LocalSelfAttention2D (k=7, 4 heads; the second with strides 2, "
        "dilation 2, border zeros), implementation='reference' (exported as blocked)",
        lambda: attention_layers("reference"),
    ),
    ("the same, implementation='unrolled'", lambda: attention_layers("unrolled")),
    (
        "SASAResNet26 16x16, stem attention_small, width 16, 4 heads",
        lambda: resnet26("attention_small", 16),
    ),
    ("SASAResNet26 16x16, stem conv_small, width 16, 4 heads", lambda: resnet26("conv_small", 16)),
    ("SASAResNet26 32x32, stem attention, width 16, 4 heads", lambda: resnet26("attention", 32)),
]


def main():
    rows = [
        f"ONNX export on {platform.machine()} CPU, Keras {keras.__version__}, onnxruntime "
        f"{onnxruntime.__version__}; batch 3 (traced at 1).",
        "",
        "| model | parameters | ONNX file | export time | max abs difference ORT vs Keras |",
        "|---|---|---|---|---|",
    ]
    directory = tempfile.mkdtemp()
    for name, build in MODELS:
        model = build()
        path = os.path.join(directory, "model.onnx")
        start = time.perf_counter()
        export.to_onnx(model, path)
        seconds = time.perf_counter() - start
        size = model.input.shape[1]
        x = np.random.default_rng(0).uniform(size=(3, size, size, 3)).astype("float32")
        session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
        outputs = session.run(None, {session.get_inputs()[0].name: x})[0]
        difference = float(np.abs(outputs - np.asarray(model(x))).max())
        rows.append(
            f"| {name} | {model.count_params():,} | {os.path.getsize(path):,} bytes | "
            f"{seconds:.0f} s | {difference:.1e} |"
        )
        print(rows[-1], flush=True)
    table = "\n".join(rows) + "\n"
    path = sys.argv[1] if len(sys.argv) > 1 else RESULTS
    with open(path, "w") as f:
        f.write(table)
    print(table)


if __name__ == "__main__":
    main()
