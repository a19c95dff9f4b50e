"""The `train` and `tune` commands as a user meets them with values that cannot work:
flag values refused in one line before anything starts, the same way in both commands,
and a run whose loss stops being finite, which stops, says so, and leaves a directory
that the corrected command uses."""

import json
import os

import pytest

from test_cli import run_cli
from test_train import SLICE_ARGS
from test_train import TINY_ARGS

pytestmark = pytest.mark.slow

EPOCHS_BOUND = "expected an integer in [1, 1000] (the run builds every epoch's data pipeline"
IMAGE_SIZE_BOUND = "expected an integer in [1, 4096] (larger images do not fit in memory)"
# (command, flags, the error line's text): each value refused before TensorFlow starts.
BAD_VALUES = [
    ("train", ["--learning-rate", "inf"], "expected a finite number > 0, got inf"),
    ("train", ["--learning-rate", "-1"], "expected a number > 0, got -1"),
    ("train", ["--stage-strides", "-1,1,1,1"], "Received: stage_strides=(-1, 1, 1, 1)"),
    ("train", ["--epochs", "99999999999999999999"], EPOCHS_BOUND),
    ("train", ["--image-size", "100000"], IMAGE_SIZE_BOUND),
    ("tune", ["--learning-rate", "inf:1"], "Expected finite numbers"),
    ("tune", ["--stage-strides", "-1,1,1,1"], "Received: stage_strides=((-1, 1, 1, 1),)"),
    ("tune", ["--epochs", "99999999999999999999"], EPOCHS_BOUND),
    ("tune", ["--image-size", "100000"], IMAGE_SIZE_BOUND),
]


def test_values_that_cannot_work_are_one_line_and_exit_2_in_train_and_tune(tmp_path):
    for command, flags, message in BAD_VALUES:
        done = run_cli([command, "--output-dir", str(tmp_path / "out"), *flags], timeout=60)
        assert done.returncode == 2, (flags, done.stderr)
        assert done.stderr.count("\n") == 1, (flags, done.stderr)
        assert message in done.stderr, (flags, done.stderr)
        assert not (tmp_path / "out").exists()


def test_a_diverged_run_stops_without_results_and_a_smaller_learning_rate_starts_over(
    digits_dir, tmp_path
):
    output_dir = str(tmp_path / "run")
    args = ["train", "--data-dir", digits_dir, "--output-dir", output_dir, "--epochs", "2"]
    # The conv baseline: what is checked is the run's handling of a diverged loss.
    args += ["--stem", "conv_small", "--attention-stages", "none", *TINY_ARGS, *SLICE_ARGS]
    done = run_cli([*args, "--learning-rate", "1e10"])
    assert done.returncode == 2, done.stderr[-2000:]
    assert done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith(
        f"error: {output_dir}: the training loss became nan in epoch 1 of 2. The learning "
        "rate, 1e+10, is the most likely cause: train again with a smaller --learning-rate "
        "(the default for a batch of 64 is 0.025)."
    ), done.stderr
    assert sorted(os.listdir(output_dir)) == ["diverged"]
    assert "results.json" not in os.listdir(os.path.join(output_dir, "diverged"))

    done = run_cli([*args, "--learning-rate", "0.05"])
    assert done.returncode == 0, done.stderr[-2000:]
    with open(os.path.join(output_dir, "results.json")) as stream:
        results = json.load(stream)
    assert (results["epochs"], results["config"]["learning_rate"]) == (2, 0.05)
