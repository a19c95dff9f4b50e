"""`python -m keras_sasa ...` as a user runs it: a separate process with the user's
environment (this checkout first on the path, no TF_CPP_MIN_LOG_LEVEL set), its exit code,
its output and its files. Each command's behaviour in this process is tested beside its
module (test_train.py, test_export.py, test_visualize.py, ...); what a command imports and
prints at start-up is in test_light_start.py.
"""

import json
import os
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest

from keras_sasa import cli
from keras_sasa import visualize
from keras_sasa.training import callbacks as run_callbacks
from keras_sasa.training import run_files
from test_export import small_model as export_model
from test_onnx import images
from test_onnx import run_onnx
from test_train import CONV_ARGS
from test_train import TINY_ARGS
from test_train import history_epochs
from test_visualize import PNG_SIGNATURE
from test_visualize import image
from test_visualize import sequential_model
from test_visualize import small_model as visualize_model

pytestmark = pytest.mark.slow

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Start Python and TensorFlow, trace, compile, a few tiny epochs.
TIMEOUT_S = 240


def user_env(pythonpath=()):
    """The user's environment: this checkout (after `pythonpath`) first on the path, and
    without the TF_CPP_MIN_LOG_LEVEL that conftest.py sets."""
    env = dict(os.environ)
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)
    env["PYTHONPATH"] = os.pathsep.join(
        [*pythonpath, REPO_ROOT, *filter(None, [env.get("PYTHONPATH")])]
    )
    return env


def run_cli(args, pythonpath=(), timeout=TIMEOUT_S):
    """`python -m keras_sasa ARGS` to its end."""
    return subprocess.run(
        [sys.executable, "-m", "keras_sasa", *args],
        cwd=REPO_ROOT,
        env=user_env(pythonpath),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def refusal(result):
    """The one `error:` line of a refused command, which is its last line on stderr
    (TensorFlow's C++ start-up lines aside)."""
    assert result.returncode == 2, result.stderr[-2000:]
    message = result.stderr.splitlines()[-1]
    assert [line for line in result.stderr.splitlines() if line.startswith("error:")] == [message]
    return message


def kill_after_first_backup(args, backup_dir):
    """Runs `python -m keras_sasa ARGS` and kills it with SIGKILL once `backup_dir` holds a
    backup of a finished epoch."""
    process = subprocess.Popen(
        [sys.executable, "-m", "keras_sasa", *args],
        cwd=REPO_ROOT,
        env=user_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + TIMEOUT_S
        while run_callbacks.backup_epoch(backup_dir) < 1:
            assert process.poll() is None, "the run ended before its first backup"
            assert time.monotonic() < deadline, "no backup in time"
            time.sleep(0.02)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)


@pytest.fixture
def attention_map_model(tmp_path):
    path = tmp_path / "model.keras"
    visualize_model().save(path)
    return path


# The command line as a whole.


def test_help_lists_the_commands():
    result = run_cli(["--help"], timeout=120)
    assert result.returncode == 0
    # Each command is listed on its own line, indented, with its help.
    listed = [line.split()[0] for line in result.stdout.splitlines() if line.startswith("    ")]
    assert {"train", "summary", "bench"} <= set(listed)


# train: resuming after SIGKILL, refusals.


def test_a_run_killed_with_sigkill_resumes_and_ends_as_the_uninterrupted_run(digits_dir, tmp_path):
    """Killed after its first backed-up epoch, a run started again trains only the epochs
    that were lost, and ends with the results, history and weights of the run that was
    never killed."""

    def args(output_dir):
        return ["train", "--data-dir", digits_dir, "--output-dir", output_dir, *CONV_ARGS[:4]]

    settings = ["--epochs", "3", "--batch-size", "32", "--train-split", "train[:128]"]
    settings += ["--test-split", "test[:64]", *TINY_ARGS]
    whole, killed = str(tmp_path / "whole"), str(tmp_path / "killed")
    kill_after_first_backup([*args(killed), *settings], os.path.join(killed, "backup"))
    backed_up = run_callbacks.backup_epoch(os.path.join(killed, "backup"))
    assert 1 <= backed_up < 3
    assert not os.path.exists(os.path.join(killed, "results.json"))
    resumed = run_cli([*args(killed), *settings])
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    # No finished epoch is trained again, and training does not start over.
    resumes = [line for line in resumed.stdout.splitlines() if "resuming after epoch" in line]
    assert len(resumes) == 1 and f"resuming after epoch {backed_up} of 3" in resumes[0]
    assert f"Epoch {backed_up + 1}/3" in resumed.stdout and "Epoch 1/" not in resumed.stdout
    assert history_epochs(os.path.join(killed, "history.csv")) == [0, 1, 2]
    assert not os.path.exists(os.path.join(killed, "backup"))
    # The reference: the same run never killed (in this process: its numbers are the same).
    assert cli.main([*args(whole), *settings]) == 0

    results = []
    for output_dir in (whole, killed):
        with open(os.path.join(output_dir, "results.json")) as f:
            results.append(json.load(f))
    assert results[1]["epochs"] == 3
    assert results[1]["test_loss"] == pytest.approx(results[0]["test_loss"], rel=1e-4)
    assert results[1]["test_accuracy"] == pytest.approx(results[0]["test_accuracy"])
    rows = [run_files.read_history(os.path.join(d, "history.csv")) for d in (whole, killed)]
    losses = [[float(row["loss"]) for row in r] for r in rows]
    np.testing.assert_allclose(losses[1], losses[0], rtol=1e-4)
    models = [keras.saving.load_model(os.path.join(d, "model.keras")) for d in (whole, killed)]
    for a, b in zip(models[0].weights, models[1].weights):
        np.testing.assert_allclose(b.numpy(), a.numpy(), rtol=1e-4, atol=1e-5, err_msg=a.path)


def test_a_run_refused_by_the_model_builder_leaves_nothing_to_refuse_the_next(
    digits_dir, tmp_path, monkeypatch
):
    output_dir = tmp_path / "D"
    args = ["train", "--data-dir", digits_dir, "--output-dir", str(output_dir), "--epochs", "1"]
    args += ["--base-width", "4", "--num-heads", "2", "--train-split", "train[:64]"]
    message = refusal(run_cli([*args, "--kernel-size", "4"]))
    assert message.startswith("error: Invalid value for argument")
    assert "kernel_size=4" in message
    assert not output_dir.exists()  # Neither config.json nor an empty directory.

    def stop(*args, **kwargs):
        raise KeyboardInterrupt  # Reached fit: the configuration was accepted.

    monkeypatch.setattr(keras.Model, "fit", stop)
    assert cli.main([*args, "--kernel-size", "5"]) == 130
    with open(output_dir / "config.json") as f:
        assert json.load(f)["kernel_size"] == 5


def test_a_data_dir_that_is_a_file_is_named(tmp_path):
    regular_file = tmp_path / "file"
    regular_file.write_text("")
    message = refusal(
        run_cli(["train", "--data-dir", str(regular_file), "--output-dir", str(tmp_path)])
    )
    assert f"not a file. Received: data_dir={str(regular_file)!r}" in message
    assert "downloads" not in message


# export: the files written, and what its messages name.


def test_export_to_a_path_inside_a_file_names_the_output(tmp_path):
    model_file = tmp_path / "model.keras"
    export_model().save(model_file)
    regular_file = tmp_path / "file"
    regular_file.write_text("")
    output = regular_file / "m.tflite"
    message = refusal(
        run_cli(["export", str(model_file), "--format", "tflite", "--output", str(output)])
    )
    assert message == (
        f"error: Cannot write --output {output}: {regular_file} is a file, not a directory."
    )
    assert ".log" not in message


def test_export_command_writes_an_onnx_file(tmp_path):
    model = export_model("reference")
    model.save(tmp_path / "model.keras")
    output = tmp_path / "model.onnx"
    done = run_cli(
        ["export", str(tmp_path / "model.keras"), "--format", "onnx", "--output", str(output)]
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"Wrote onnx {output}\n"
    assert not os.path.exists(f"{output}.log")  # The exporter's log goes once it succeeded.
    x = images(2, (12, 12, 3), seed=3)
    np.testing.assert_allclose(run_onnx(output, x)[0], np.asarray(model(x)), atol=1e-4)


def test_export_command_says_what_to_install_without_tf2onnx(tmp_path):
    # A tf2onnx that cannot be imported, as where the package is not installed.
    shadow = tmp_path / "shadow"
    shadow.mkdir()
    (shadow / "tf2onnx.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'tf2onnx'\", name='tf2onnx')\n"
    )
    export_model("blocked").save(tmp_path / "model.keras")
    args = ["export", str(tmp_path / "model.keras"), "--format", "onnx"]
    done = run_cli([*args, "--output", str(tmp_path / "model.onnx")], pythonpath=[str(shadow)])
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr == (
        "error: ONNX export needs the tf2onnx package, which is not installed: "
        'pip install "keras-sasa[onnx]"\n'
    )
    assert not (tmp_path / "model.onnx").exists()


# attention-map: the figure, and what its messages name.


def test_attention_map_command_on_a_sequential_model_file(tmp_path):
    sequential_model().save(tmp_path / "sequential.keras")
    np.save(tmp_path / "image.npy", image())
    output = tmp_path / "map.png"
    argv = ["attention-map", str(tmp_path / "sequential.keras"), str(tmp_path / "image.npy")]
    result = run_cli([*argv, "--output", str(output)])
    assert result.returncode == 0, result.stderr[-2000:]
    assert output.read_bytes()[:8] == PNG_SIGNATURE


def test_attention_map_command_names_a_corrupt_image(attention_map_model, tmp_path):
    source = tmp_path / "broken.png"
    source.write_bytes(PNG_SIGNATURE + b"not the rest of a PNG")
    argv = ["attention-map", str(attention_map_model), str(source), "--output", "x.png"]
    message = refusal(run_cli(argv))
    assert f"Cannot read {source} as an image" in message
    assert "BytesIO" not in message


def test_attention_map_grid_is_bounded_by_the_feature_map(attention_map_model, tmp_path):
    source = tmp_path / "image.npy"
    np.save(source, image())
    output = tmp_path / "grid.png"
    argv = ["attention-map", str(attention_map_model), str(source), "--output", str(output)]
    message = refusal(run_cli([*argv, "--layer", "attn2", "--grid", "50"]))
    assert not output.exists()
    assert message == (
        "error: Invalid value for argument `grid`. Expected at most 6, the side of the 6x6 "
        "feature map the attention layer works on. Received: grid=50"
    )
    # The largest grid: one query per feature pixel.
    figure = visualize.plot_attention_grid(visualize_model(), image(), "attn2", grid=6)
    assert len(figure.axes) == 36


# Arguments a command would ignore or misuse: refused before it starts, in one line.


def _a_zip_file(path):
    """A file that passes the commands' first look at a model (a zip archive)."""
    import zipfile

    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("config.json", "{}")
    return str(path)


def test_arguments_a_command_would_ignore_or_misuse_are_refused_before_it_starts(tmp_path):
    model = _a_zip_file(tmp_path / "model.keras")
    holding = tmp_path / "holding"
    holding.mkdir()
    (holding / "mine.txt").write_text("the user's file")
    regular = tmp_path / "file"
    regular.write_text("")
    export = ["export", model, "--format"]
    attention_map = ["attention-map", model, str(tmp_path / "image.npy")]
    cases = [
        (["train", "--tpu", "foo"], "error: --tpu foo needs --strategy tpu (got --strategy auto)"),
        (["tune", "--tpu", "foo", "--strategy", "mirrored"], "(got --strategy mirrored)"),
        ([*export, "saved_model", "--output", str(holding)], "is a directory that holds files"),
        ([*export, "saved_model", "--output", str(regular)], f"--output {regular} is a file"),
        ([*export, "onnx", "--output", str(tmp_path / "x.tflite")], "does not end in .onnx"),
        ([*export, "tflite", "--output", str(tmp_path / "x.onnx")], "does not end in .tflite"),
        ([*attention_map, "--output", "x.png", "--grid", "2", "--pixel", "1", "1"], "--grid and"),
        ([*attention_map, "--output", str(holding)], f"--output {holding} is a directory"),
    ]
    for args, message in cases:
        result = run_cli(args, timeout=120)
        assert message in refusal(result), args
        assert result.stdout == "", args
    assert sorted(os.listdir(tmp_path)) == ["file", "holding", "model.keras"]
    assert os.listdir(holding) == ["mine.txt"]


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs Linux's /proc")
def test_export_to_a_directory_that_cannot_be_written_names_the_output(tmp_path):
    model_file = tmp_path / "model.keras"
    export_model().save(model_file)
    output = "/proc/x.tflite"
    message = refusal(
        run_cli(["export", str(model_file), "--format", "tflite", "--output", output])
    )
    assert message.startswith(f"error: Cannot write --output {output}: ")
    assert ".log" not in message


def test_attention_map_refuses_an_image_that_is_not_finite(attention_map_model, tmp_path):
    source = tmp_path / "nan.npy"
    pixels = image()
    pixels[2, 3, 0] = np.nan
    pixels[4, 5, 1] = np.inf
    np.save(source, pixels)
    output = tmp_path / "map.png"
    argv = ["attention-map", str(attention_map_model), str(source), "--output", str(output)]
    message = refusal(run_cli(argv))
    assert message == (
        f"error: {source} holds NaN or infinite values (2 of {pixels.size}); an image needs "
        "finite values."
    )
    assert not output.exists()


def test_bench_refuses_kernel_sizes_it_does_not_measure():
    message = refusal(run_cli(["bench", "--quick", "--kernel-sizes", "4"], timeout=120))
    assert message == (
        "error: --kernel-sizes 4: bench --quick measures kernel sizes 7 only, not 4."
    )


def test_bench_serving_refuses_kernel_sizes_it_would_ignore():
    message = refusal(run_cli(["bench", "--serving", "--kernel-sizes", "3"], timeout=120))
    assert message == "error: --kernel-sizes chooses rows of the layer table, not of --serving."


def test_a_damaged_results_file_is_one_line_naming_it(digits_dir, tmp_path):
    results = tmp_path / "run" / "results.json"
    results.parent.mkdir()
    results.write_text("[]")
    argv = ["train", "--data-dir", digits_dir, "--output-dir", str(results.parent)]
    message = refusal(run_cli(argv))
    assert message == (
        f"error: {results} is damaged (a JSON list, not an object). Delete it to train the "
        "run again."
    )
