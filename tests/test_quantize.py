"""Quantized TFLite export: dynamic range (int8 weights) and full integer (int8 activations)."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

import keras_sasa
from keras_sasa import LocalSelfAttention2D
from keras_sasa import export


def digits_sized_model():
    """Attention over every pixel of an 8 x 8 image, so the border mask is everywhere; a
    projection of 16 x 96 weights, large enough for the converter to quantize."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="proj")(inputs)
    attention = LocalSelfAttention2D(32, 3, 2, name="attn")
    x = keras.layers.GlobalAveragePooling2D()(attention(x))
    model = keras.Model(inputs, keras.layers.Dense(10, name="head")(x), name="tiny_sasa")
    # Peaked attention, as a trained model has: with the initial weights the logits are
    # so small that even uniform weights would pass for the real ones.
    for kernel in (attention.query_kernel, attention.key_kernel):
        kernel.assign(6.0 * np.asarray(kernel))
    return model


def calibration(count=64, seed=0):
    return np.random.default_rng(seed).uniform(size=(count, 8, 8, 1)).astype("float32")


# Both attention implementations that convert to TFLite builtins: the blocked one (the
# default) and the unrolled one.
@pytest.fixture(scope="module", params=["blocked", "unrolled"])
def model_and_files(request):
    model = digits_sized_model()
    images = calibration()
    files = {
        mode: export.to_tflite(
            model,
            implementation=request.param,
            quantize=mode,
            representative_images=images if mode == "int8" else None,
        )
        for mode in (None, "dynamic", "int8")
    }
    return model, files


def tensor_dtypes(flatbuffer):
    interpreter = export.tflite_interpreter(flatbuffer=flatbuffer)
    return [t["dtype"] for t in interpreter.get_tensor_details()]


def test_float_export_keeps_every_op_float(model_and_files):
    model, files = model_and_files
    assert np.int8 not in tensor_dtypes(files[None])
    assert "SOFTMAX" in export.float_ops(files[None])


def test_dynamic_quantization_stores_int8_weights_and_computes_in_float(model_and_files):
    model, files = model_and_files
    assert np.int8 in tensor_dtypes(files["dynamic"])
    assert len(files["dynamic"]) < len(files[None])
    # Activations stay float: the softmax and the mask's products too.
    assert {"SOFTMAX", "MUL"} <= set(export.float_ops(files["dynamic"]))
    x = calibration(16, seed=1)
    expected = np.asarray(model(x))
    got = export.run_tflite(files["dynamic"], x)
    np.testing.assert_allclose(got, expected, atol=0.02 * np.ptp(expected))


def test_full_integer_computes_every_op_in_int8_with_float_input_and_output(model_and_files):
    _, files = model_and_files
    interpreter = export.tflite_interpreter(flatbuffer=files["int8"])
    assert interpreter.get_input_details()[0]["dtype"] == np.float32
    assert interpreter.get_output_details()[0]["dtype"] == np.float32
    # Only the closing dequantize gives float: the softmax and the border mask are int8.
    assert export.float_ops(files["int8"]) == {"DEQUANTIZE": 1}


def test_full_integer_keeps_the_float_outputs_through_the_border_mask(model_and_files):
    # With the mask added as -1e9 the logits' int8 step was millions wide and the
    # attention uniform: errors of 8% of the outputs' range here (unrolled). The select
    # masks keep the logits' own range: under 1%.
    model, files = model_and_files
    x = calibration(16, seed=1)
    expected = np.asarray(model(x))
    got = export.run_tflite(files["int8"], x)
    np.testing.assert_allclose(got, expected, atol=0.02 * np.ptp(expected))


def test_to_tflite_rejects_bad_quantize_arguments():
    model = digits_sized_model()
    with pytest.raises(ValueError, match="quantize='float16'"):
        export.to_tflite(model, quantize="float16")
    with pytest.raises(ValueError, match="representative_images=None"):
        export.to_tflite(model, quantize="int8")


REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def export_command(*args):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=REPO_ROOT)
    return subprocess.run(
        [sys.executable, "-m", "keras_sasa", "export", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        env=env,
    )


@pytest.mark.slow
def test_export_command_int8_needs_a_dataset_outside_a_run_directory(tmp_path):
    path = tmp_path / "model.keras"
    digits_sized_model().save(path)
    output = tmp_path / "model.tflite"
    missing = export_command(path, "--format", "tflite", "--quantize", "int8", "--output", output)
    assert missing.returncode == 2
    assert missing.stderr.count("\n") == 1 and "--dataset" in missing.stderr
    onnx = export_command(path, "--format", "onnx", "--quantize", "dynamic", "--output", output)
    assert onnx.returncode == 2
    assert onnx.stderr == "error: --quantize applies to --format tflite only, not onnx.\n"
    assert not output.exists()


@pytest.mark.slow
def test_export_command_quantizes_with_the_run_directory_dataset(tmp_path, digits_dir):
    # A run directory: results.json beside the model names the data set to calibrate on.
    run = tmp_path / "run"
    run.mkdir()
    model = digits_sized_model()
    model.save(run / "model.keras")
    results = {"dataset": "digits", "config": {"data_dir": digits_dir}}
    (run / "results.json").write_text(json.dumps(results))
    int8 = tmp_path / "int8.tflite"
    done = export_command(
        run / "model.keras", "--format", "tflite", "--quantize", "int8", "--output", int8
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().endswith(f"Wrote tflite {int8}")
    assert export.float_ops(int8.read_bytes()) == {"DEQUANTIZE": 1}
    # Outside a run directory, from --dataset.
    model.save(tmp_path / "model.keras")
    named = tmp_path / "named.tflite"
    done = export_command(
        tmp_path / "model.keras",
        "--format",
        "tflite",
        "--quantize",
        "int8",
        "--dataset",
        "digits",
        "--data-dir",
        digits_dir,
        "--output",
        named,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert export.float_ops(named.read_bytes()) == {"DEQUANTIZE": 1}
    x = calibration(8, seed=2)
    expected = np.asarray(model(x))
    np.testing.assert_allclose(
        export.run_tflite(int8.read_bytes(), x), expected, atol=0.05 * np.ptp(expected)
    )


@pytest.mark.parametrize("window", ["block", "sliding"])
def test_full_integer_keeps_the_attention_stem_through_its_border_mask(window):
    # The stem's windows reach outside the image on a 10 x 10 input. With -1e9 added to
    # those logits the int8 outputs were off by 18-20% of their range; the select keeps 1%.
    keras.utils.set_random_seed(0)
    inputs = keras.Input((10, 10, 3))
    stem = keras_sasa.AttentionStem2D(16, kernel_size=4, num_heads=2, window=window)
    x = keras.layers.GlobalAveragePooling2D()(stem(inputs))
    model = keras.Model(inputs, keras.layers.Dense(10)(x))
    for kernel in (stem.query_kernel, stem.key_kernel):  # peaked attention, as trained
        kernel.assign(6.0 * np.asarray(kernel))
    rng = np.random.default_rng(0)
    images = rng.uniform(size=(64, 10, 10, 3)).astype("float32")
    flatbuffer = export.to_tflite(model, quantize="int8", representative_images=images)
    assert export.float_ops(flatbuffer) == {"DEQUANTIZE": 1}
    x = rng.uniform(size=(16, 10, 10, 3)).astype("float32")
    expected = np.asarray(model(x))
    got = export.run_tflite(flatbuffer, x)
    np.testing.assert_allclose(got, expected, atol=0.02 * np.ptp(expected))
