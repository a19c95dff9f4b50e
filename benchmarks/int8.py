"""int8 TFLite of a trained model: file size, test accuracy, latency and the ops left float.

For the model of a finished `python -m keras_sasa train` run (MODEL.keras with its
results.json beside it), converts with `export.to_tflite` three ways: float32,
`quantize="dynamic"` (int8 weights) and `quantize="int8"` (full integer, calibrated on the
first 200 training images, float input and output), as `python -m keras_sasa export
MODEL.keras --format tflite [--quantize ...]` does. Each file is evaluated on the run's
whole test split in LiteRT; latency is one image (batch 1) in LiteRT with 2 threads,
median of round-robin calls. Keras's own `model.quantize("int8")` is tried on the model
too: the table says which layers it quantizes.

    python benchmarks/int8.py benchmarks/results/int8.md runs/digits_main/model.keras \
        [runs/digits_main/baseline/model.keras]

writes the Markdown table to the first argument and the numbers beside it (.json).
"""

import json
import os
import statistics
import sys
import time

import keras
import numpy as np

from keras_sasa import export
from keras_sasa import serving
from keras_sasa.benchmark import machine_description

MODES = (None, "dynamic", "int8")
LATENCY_RUNS = 50


def run_info(model_path):
    with open(os.path.join(os.path.dirname(os.path.abspath(model_path)), "results.json")) as f:
        results = json.load(f)
    return results["dataset"], results["test_split"], results["config"].get("data_dir")


def keras_int8(model, images, labels):
    """Accuracy of a copy of `model` after `model.quantize("int8")`, and the layers it
    changed (those whose kernels became int8)."""
    clone = keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    clone.quantize("int8")
    changed = [
        layer.name for layer in clone.layers if any("int8" in str(w.dtype) for w in layer.weights)
    ]
    accuracy = float(np.mean(np.argmax(clone.predict(images, verbose=0), -1) == labels))
    return accuracy, changed


def measure(model_path):
    model = keras.models.load_model(model_path)
    dataset, test_split, data_dir = run_info(model_path)
    shape = tuple(model.inputs[0].shape[1:])
    images, labels = serving.split_images(dataset, test_split, shape, data_dir=data_dir)
    calibration = serving.calibration_images(dataset, shape, data_dir=data_dir)
    keras_accuracy = float(np.mean(np.argmax(model.predict(images, verbose=0), -1) == labels))
    rows, runners = [], {}
    for mode in MODES:
        flatbuffer = export.to_tflite(
            model, quantize=mode, representative_images=calibration if mode == "int8" else None
        )
        predictions = export.run_tflite(flatbuffer, images)
        rows.append(
            {
                "mode": mode or "float32",
                "bytes": len(flatbuffer),
                "accuracy": float(np.mean(np.argmax(predictions, -1) == labels)),
                "float_ops": export.float_ops(flatbuffer),
            }
        )
        runners[mode or "float32"] = serving.litert_runner(flatbuffer)
    times = serving.time_round_robin(runners, images[:1], LATENCY_RUNS)
    for row in rows:
        row["median_ms"] = statistics.median(times[row["mode"]])
    quantized_accuracy, quantized_layers = keras_int8(model, images, labels)
    return {
        "model": model_path,
        "name": model.name,
        "test_images": len(labels),
        "keras_accuracy": keras_accuracy,
        "tflite": rows,
        "keras_quantize_int8": {"accuracy": quantized_accuracy, "layers": quantized_layers},
    }


def markdown(results):
    lines = [
        f"int8 TFLite on {machine_description()}; {time.strftime('%Y-%m-%d')}. Latency: "
        f"batch 1 in LiteRT (2 threads), median of {LATENCY_RUNS} round-robin calls, on the "
        "shared 2-core CPU.",
        "",
    ]
    for r in results:
        lines += [
            f"{r['name']} ({r['model']}), {r['test_images']} test images; Keras float32 "
            f"accuracy {100 * r['keras_accuracy']:.2f}%.",
            "",
            "| TFLite file | size | test accuracy | vs float32 | latency "
            "| ops computing in float |",
            "|---|---|---|---|---|---|",
        ]
        base = r["tflite"][0]
        for row in r["tflite"]:
            if row["mode"] == "int8":
                ops = ", ".join(f"{k} x{v}" for k, v in row["float_ops"].items())
            else:
                ops = f"all ({sum(row['float_ops'].values())} ops)"
            lines.append(
                f"| {row['mode']} | {row['bytes'] / 1e6:.2f} MB "
                f"({row['bytes'] / base['bytes']:.2f}x) | {100 * row['accuracy']:.2f}% | "
                f"{100 * (row['accuracy'] - base['accuracy']):+.2f} | "
                f"{row['median_ms']:.2f} ms | {ops} |"
            )
        k = r["keras_quantize_int8"]
        lines += [
            "",
            f'Keras `model.quantize("int8")`: {100 * k["accuracy"]:.2f}% test accuracy; '
            f"layers quantized: {', '.join(k['layers']) or 'none'}.",
            "",
        ]
    return "\n".join(lines)


def main(output, paths):
    results = [measure(path) for path in paths]
    text = markdown(results)
    with open(output, "w") as f:
        f.write(text)
    with open(os.path.splitext(output)[0] + ".json", "w") as f:
        json.dump(results, f, indent=1)
    print(text)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
