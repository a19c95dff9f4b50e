"""keras_sasa.training and the `train` command in this process: outputs, resuming, errors.
(The command as a separate process, killed with SIGKILL and resumed: test_cli.py.)

The models are tiny (width 4, 2 heads, k = 3) and train on slices of digits, so that a run
takes seconds; most of its time is tracing and compiling.
"""

import glob
import json
import os

import keras
import numpy as np
import pytest

from keras_sasa import cli
from keras_sasa import data
from keras_sasa import training
from keras_sasa.training import callbacks as run_callbacks
from keras_sasa.training import recipe
from keras_sasa.training import run_files

TINY = dict(base_width=4, num_heads=2, kernel_size=3)
TINY_ARGS = ["--base-width", "4", "--num-heads", "2", "--kernel-size", "3"]
SLICES = dict(train_split="train[:256]", test_split="test[:128]")
SLICE_ARGS = ["--train-split", "train[:256]", "--test-split", "test[:128]"]


@pytest.fixture(scope="module")
def compared_run(digits_dir, tmp_path_factory):
    """Two epochs of a tiny SASA-ResNet-26 and its conv baseline; (config, results, logs)."""
    output_dir = str(tmp_path_factory.mktemp("run"))
    config = training.TrainConfig(
        data_dir=digits_dir,
        output_dir=output_dir,
        epochs=2,
        batch_size=64,
        ema_momentum=0.5,
        compare_baseline=True,
        verbose=0,
        **TINY,
        **SLICES,
    )
    messages = []
    results = training.train(config, log=messages.append)
    return config, results, messages


def history_epochs(path):
    return [int(row["epoch"]) for row in run_files.read_history(path)]


# The recipe.


def test_learning_rate_scales_with_the_batch_like_the_paper():
    assert recipe.scaled_learning_rate(4096) == pytest.approx(1.6)
    assert recipe.scaled_learning_rate(64) == pytest.approx(0.025)


def test_schedule_warms_up_linearly_then_decays_to_zero_along_a_cosine():
    schedule = recipe.learning_rate_schedule(0.4, total_steps=100, warmup_steps=10)
    lr = [float(schedule(step)) for step in (0, 5, 10, 55, 100)]
    assert lr == pytest.approx([0.0, 0.2, 0.4, 0.2, 0.0], abs=1e-6)


def test_schedule_without_warmup_starts_at_the_peak():
    schedule = recipe.learning_rate_schedule(0.1, total_steps=10, warmup_steps=0)
    assert float(schedule(0)) == pytest.approx(0.1)
    assert float(schedule(10)) == pytest.approx(0.0, abs=1e-7)


def test_ema_and_batch_norm_momenta_are_the_papers_on_long_runs_and_shorter_on_short_ones():
    assert recipe.default_ema_momentum(130 * 5005) == pytest.approx(0.9999)  # batch 256
    assert recipe.default_ema_momentum(130 * 312) == pytest.approx(1 - 10 / (130 * 312))
    assert recipe.default_ema_momentum(660) == pytest.approx(1 - 10 / 660)
    assert recipe.default_ema_momentum(8) == 0.0
    assert recipe.default_batch_norm_momentum(660) == pytest.approx(1 - 10 / 660)


def test_optimizer_is_nesterov_sgd_with_ema_and_decay_off_batch_norm_and_biases():
    optimizer = recipe.make_optimizer(0.1, weight_decay=1e-4, ema_momentum=0.99)
    assert optimizer.nesterov and optimizer.momentum == 0.9
    assert optimizer.use_ema and optimizer.ema_momentum == 0.99
    model = keras.Sequential(
        [keras.Input((4,)), keras.layers.Dense(3), keras.layers.BatchNormalization()]
    )
    optimizer.build(model.trainable_variables)
    decayed = {v.name for v in model.trainable_variables if optimizer._use_weight_decay(v)}
    assert decayed == {"kernel"}


def test_resolve_picks_small_image_defaults_for_digits(digits_dir):
    info = data.dataset_info("digits", data_dir=digits_dir)
    config = training.resolve(training.TrainConfig(), info)
    assert (config.image_size, config.stem, config.attention_stages, config.kernel_size) == (
        8,
        "conv_small",
        (1, 2, 3, 4),
        3,
    )
    assert config.num_heads == 2
    assert config.stage_strides == (1, 1, 2, 2)
    assert config.learning_rate == pytest.approx(0.1 * config.batch_size / 256)
    assert config.warmup_epochs == pytest.approx(config.epochs * 10 / 130)
    baseline = training.baseline(config)
    assert (baseline.stem, baseline.attention_stages) == ("conv_small", ())
    assert baseline.stage_strides == config.stage_strides


def test_stage_strides_reach_the_model(digits_dir):
    info = data.dataset_info("digits", data_dir=digits_dir)
    config = training.resolve(
        training.TrainConfig(stage_strides=(1, 2, 1, 2), base_width=4, num_heads=2), info
    )
    model = training.build_model(config, info)
    sides = [model.get_layer(f"conv{g + 1}_block1_out").output.shape[1] for g in range(1, 5)]
    assert sides == [8, 4, 4, 2]
    assert config.to_dict()["stage_strides"] == [1, 2, 1, 2]


def test_resolve_picks_the_papers_settings_for_large_images(digits_dir):
    info = data.dataset_info("digits", data_dir=digits_dir)
    config = training.resolve(training.TrainConfig(image_size=224), info)
    assert (
        config.stem,
        config.kernel_size,
        config.base_width,
        config.num_heads,
        config.epochs,
    ) == ("attention", 7, 64, 8, 130)
    assert training.baseline(config).stem == "conv"


# A finished run's outputs.


def test_results_json_holds_the_models_numbers(compared_run):
    config, results, _ = compared_run
    with open(os.path.join(config.output_dir, "results.json")) as f:
        stored = json.load(f)
    assert stored == json.loads(json.dumps(results))
    assert (stored["model"], stored["dataset"], stored["epochs"]) == ("sasa_resnet26", "digits", 2)
    assert stored["stem"] == "conv_small" and stored["attention_stages"] == [1, 2, 3, 4]
    assert 10_000 < stored["params"] < 100_000
    assert stored["flops"] > 2 * stored["params"]  # Every weight is used at least once.
    assert 0.0 <= stored["test_accuracy"] <= 1.0
    assert np.isfinite(stored["test_loss"]) and stored["test_loss"] > 0
    assert stored["train_images_per_second"] > 0
    assert stored["steps_per_epoch"] == 256 // 64


def test_history_has_one_row_per_epoch_with_metrics(compared_run):
    config, _, _ = compared_run
    rows = run_files.read_history(os.path.join(config.output_dir, "history.csv"))
    assert [int(row["epoch"]) for row in rows] == [0, 1]
    for column in ("loss", "accuracy", "val_loss", "val_accuracy", "learning_rate"):
        assert all(np.isfinite(float(row[column])) for row in rows), column
    # The learning rate decays to 0 at the end of the run.
    assert float(rows[-1]["learning_rate"]) == pytest.approx(0.0, abs=1e-7)


def test_saved_model_loads_in_safe_mode_and_reproduces_the_test_loss(compared_run, digits_dir):
    config, results, _ = compared_run
    model = keras.saving.load_model(os.path.join(config.output_dir, "model.keras"), safe_mode=True)
    info = data.dataset_info("digits", data_dir=digits_dir)
    resolved = training.resolve(config, info)
    _, test_data, _ = training.make_datasets(resolved, info)
    scores = model.evaluate(test_data, return_dict=True, verbose=0)
    assert scores["loss"] == pytest.approx(results["test_loss"], rel=1e-5)
    assert scores["accuracy"] == pytest.approx(results["test_accuracy"])
    # The training split's accuracy: its 256 images, unaugmented, in inference mode.
    images, labels = zip(*data.load_dataset("digits", "train[:256]", 64, data_dir=digits_dir))
    predicted = np.argmax(model.predict(np.concatenate(images), verbose=0), axis=-1)
    accuracy = float(np.mean(predicted == np.concatenate(labels)))
    assert results["train_split_accuracy"] == pytest.approx(accuracy)
    assert results["baseline"]["train_split_accuracy"] is not None


def test_saved_model_holds_the_ema_weights_not_the_last_trained_ones(compared_run):
    config, _, _ = compared_run
    model = keras.saving.load_model(os.path.join(config.output_dir, "model.keras"))
    trained = keras.saving.load_model(os.path.join(config.output_dir, "model.keras"))
    trained.load_weights(os.path.join(config.output_dir, "checkpoints", "latest.weights.h5"))
    kernel = "conv2_block1_1_conv"
    ema, last = (m.get_layer(kernel).kernel.numpy() for m in (model, trained))
    assert not np.allclose(ema, last)


def test_tensorboard_logs_and_checkpoints_are_written_and_the_backup_removed(compared_run):
    config, _, _ = compared_run
    out = config.output_dir
    for split in ("train", "validation"):
        assert glob.glob(os.path.join(out, "logs", split, "events.out.tfevents.*")), split
    assert os.listdir(os.path.join(out, "checkpoints")) == ["latest.weights.h5"]
    assert not os.path.exists(os.path.join(out, "backup"))


def test_baseline_is_the_conv_model_of_the_same_depth_in_its_own_directory(compared_run):
    config, results, _ = compared_run
    baseline = results["baseline"]
    assert (baseline["stem"], baseline["attention_stages"]) == ("conv_small", [])
    assert baseline["params"] != results["params"] and baseline["flops"] != results["flops"]
    assert 0.0 <= baseline["test_accuracy"] <= 1.0 and baseline["train_images_per_second"] > 0
    baseline_dir = os.path.join(config.output_dir, "baseline")
    with open(os.path.join(baseline_dir, "results.json")) as f:
        assert json.load(f)["params"] == baseline["params"]
    assert history_epochs(os.path.join(baseline_dir, "history.csv")) == [0, 1]


def test_comparison_table_shows_both_accuracies_and_parameter_counts(compared_run):
    _, results, _ = compared_run
    table = training.format_results(results)
    assert "SASA model" in table and "conv baseline" in table
    for r in (results, results["baseline"]):
        assert f"{100 * r['test_accuracy']:.2f}%" in table
        assert f"{r['params']:,}" in table
    (row,) = [line for line in table.splitlines() if line.startswith("train split accuracy")]
    assert row.split()[3:] == [
        f"{100 * r['train_split_accuracy']:.2f}%" for r in (results, results["baseline"])
    ]


def test_a_finished_run_started_again_reports_its_results_and_trains_nothing(compared_run):
    config, results, _ = compared_run
    model_file = os.path.join(config.output_dir, "model.keras")
    modified = os.path.getmtime(model_file)
    messages = []
    again = training.train(config, log=messages.append)
    assert again == json.loads(json.dumps(results))
    assert sum("already trained" in m for m in messages) == 2  # The model and its baseline.
    assert os.path.getmtime(model_file) == modified
    assert history_epochs(os.path.join(config.output_dir, "history.csv")) == [0, 1]


def test_an_output_dir_of_another_configuration_is_refused(compared_run):
    config, _, _ = compared_run
    with pytest.raises(ValueError, match="another configuration.*epochs=2 there, 3 here"):
        training.train(config.replace(epochs=3))


# Resuming.


def test_history_logger_drops_rows_of_epochs_to_be_trained_again_and_partial_lines(tmp_path):
    path = str(tmp_path / "history.csv")
    with open(path, "w") as f:
        f.write("epoch,loss\n0,1.0\n1,0.9\n2,0.8\n3,0.")  # Killed while writing epoch 3.
    logger = run_callbacks.EpochCSVLogger(path)
    logger.on_train_begin()
    logger.on_epoch_begin(2)  # The backup holds epochs 0 and 1: epoch 2 is trained again.
    logger.on_epoch_end(2, {"loss": 0.7})
    logger.on_train_end()
    assert history_epochs(path) == [0, 1, 2]
    assert [row["loss"] for row in run_files.read_history(path)] == ["1.0", "0.9", "0.7"]


def test_backup_files_are_replaced_atomically(tmp_path, monkeypatch):
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    backup = run_callbacks.AtomicBackupAndRestore(str(tmp_path / "backup"))
    backup.set_model(model)
    renamed = []
    real_replace = os.replace
    monkeypatch.setattr(os, "replace", lambda a, b: (renamed.append(b), real_replace(a, b)))
    backup.on_epoch_end(0)
    assert [os.path.basename(p) for p in renamed] == [
        "latest.weights.h5",
        "training_metadata.json",
    ]
    assert sorted(os.listdir(tmp_path / "backup")) == [
        "latest.weights.h5",
        "training_metadata.json",
    ]
    assert run_callbacks.backup_epoch(str(tmp_path / "backup")) == 1


def test_a_run_stopped_after_training_only_evaluates_and_saves_when_started_again(
    digits_dir, tmp_path, monkeypatch
):
    from keras_sasa.training import run

    config = training.TrainConfig(
        data_dir=digits_dir,
        output_dir=str(tmp_path / "run"),
        stem="conv_small",
        attention_stages=(),
        epochs=2,
        verbose=0,
        **TINY,
        **SLICES,
    )
    write_json = run.run_files.write_json_atomically

    def stop_at_results(path, value):
        if path.endswith("results.json"):
            raise KeyboardInterrupt  # Stopped between fit and the results.
        write_json(path, value)

    monkeypatch.setattr(run.run_files, "write_json_atomically", stop_at_results)
    with pytest.raises(KeyboardInterrupt):
        training.train(config)
    monkeypatch.undo()
    assert run_callbacks.backup_epoch(str(tmp_path / "run" / "backup")) == 2

    messages = []
    results = training.train(config, log=messages.append)
    assert any("resuming after epoch 2 of 2" in m for m in messages)
    assert history_epochs(str(tmp_path / "run" / "history.csv")) == [0, 1]
    assert results["epochs"] == 2 and 0.0 <= results["test_accuracy"] <= 1.0
    assert os.path.exists(tmp_path / "run" / "results.json")
    assert not os.path.exists(tmp_path / "run" / "backup")


# The command line.


def test_summary_prints_the_paper_table(monkeypatch, capsys):
    from keras_sasa.models import paper

    monkeypatch.setattr(paper, "paper_table", lambda: "Table 1: ...")
    assert cli.main(["summary"]) == 0
    assert capsys.readouterr().out == "Table 1: ...\n"


@pytest.mark.parametrize(
    "args, message",
    [
        (["--dataset", "cifar1O"], "Unknown data set 'cifar1O'. Did you mean one of: cifar10"),
        (["--model", "resnet26"], "`model`. Expected one of ('sasa_resnet26',"),
        (["--epochs", "0"], "argument --epochs: expected a positive integer, got 0"),
        (["--batch-size", "-8"], "argument --batch-size: expected a positive integer, got -8"),
        (["--stem", "attention"], "the input is too small"),
        (["--attention-stages", "1,5"], "1..4. Received: attention_stages=(1, 5)"),
        (["--stage-strides", "1,2,2"], "4 positive integers, one per group. Received: "),
        (["--stage-strides", "1,x,2,2"], "argument --stage-strides: expected integers"),
        (["--stage-strides", "0,2,2,2"], "Received: stage_strides=(0, 2, 2, 2)"),
        (["--seeds", "0,0"], "argument --seeds: expected distinct integers"),
        (["--seeds", "a,b"], "argument --seeds: expected integers like 0,1,2, got 'a,b'"),
        (["--validation-split", "1.5"], "`validation_split`. Expected a value in [0.01, 0.99]"),
        (["--validation-split", "x"], "argument --validation-split: expected a number"),
        (["--validation-split", "0.2", "--train-split", "train[:50%]"], "is already a slice"),
        (["--learning-rate", "-1"], "argument --learning-rate: expected a number > 0, got -1"),
        (["--learning-rate", "0"], "argument --learning-rate: expected a number > 0, got 0"),
        (["--learning-rate", "inf"], "--learning-rate: expected a finite number > 0, got inf"),
        (["--learning-rate", "nan"], "--learning-rate: expected a finite number > 0, got nan"),
        (["--momentum", "1"], "argument --momentum: expected a number in [0, 1), got 1"),
        (["--weight-decay", "-1e-4"], "--weight-decay: expected a number >= 0, got -1e-4"),
        (["--stage-strides", "-1,1,1,1"], "Received: stage_strides=(-1, 1, 1, 1)"),
        (["--epochs", "99999999999999999999"], "--epochs: expected an integer in [1, 1000] (the"),
        (["--image-size", "100000"], "expected an integer in [1, 4096] (larger images do not"),
        (["--batch-size", "1e9"], "argument --batch-size: expected an integer, got '1e9'"),
        (["--seed", "-1"], "argument --seed: expected an integer in [0, 4294967295], got -1"),
    ],
    ids=[
        "dataset",
        "model",
        "epochs",
        "batch-size",
        "too-small-images",
        "stages",
        "strides-count",
        "strides-word",
        "strides-zero",
        "repeated-seed",
        "seed-word",
        "split-range",
        "split-word",
        "split-of-slice",
        "negative-learning-rate",
        "zero-learning-rate",
        "infinite-learning-rate",
        "nan-learning-rate",
        "momentum-one",
        "negative-weight-decay",
        "negative-stride",
        "epochs-beyond-bound",
        "image-size-beyond-bound",
        "batch-size-word",
        "negative-seed",
    ],
)
def test_bad_input_is_one_line_on_stderr_and_a_nonzero_exit(
    args, message, digits_dir, tmp_path, capsys
):
    argv = ["train", "--data-dir", digits_dir, "--output-dir", str(tmp_path / "out"), *args]
    try:
        code = cli.main(argv)
    except SystemExit as exit:  # argparse's errors
        code = exit.code
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and err.endswith("\n"), err
    assert "Traceback" not in err
    assert message in err
    assert not os.path.exists(tmp_path / "out" / "config.json")


def test_running_out_of_memory_is_one_line_naming_the_flags_to_lower(monkeypatch, tmp_path, capsys):
    import tensorflow as tf

    def out_of_memory(*args, **kwargs):
        message = "OOM when allocating tensor with shape[64,3,4096,4096]\n\t [[{{node x}}]]"
        raise tf.errors.ResourceExhaustedError(None, None, message)

    monkeypatch.setattr(training, "train", out_of_memory)
    assert cli.main(["train", "--output-dir", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err == (
        "error: Out of memory (OOM when allocating tensor with shape[64,3,4096,4096]): train "
        "with a smaller --batch-size or --image-size, in another --output-dir or after "
        f"deleting {tmp_path / 'out'}.\n"
    )


def test_an_output_dir_that_cannot_be_written_is_one_line_on_stderr(digits_dir, tmp_path, capsys):
    regular_file = tmp_path / "file"
    regular_file.write_text("")
    argv = ["train", "--data-dir", digits_dir, "--output-dir", str(regular_file / "out")]
    assert cli.main(argv) != 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert f"Cannot write the output directory '{regular_file / 'out'}'" in err


def test_compare_baseline_prints_both_models_from_the_command_line(compared_run, capsys):
    config, results, _ = compared_run
    argv = ["train", "--data-dir", config.data_dir, "--output-dir", config.output_dir]
    argv += ["--epochs", "2", "--batch-size", "64", "--ema-momentum", "0.5", "--compare-baseline"]
    argv += [*TINY_ARGS, *SLICE_ARGS]
    assert cli.main(argv) == 0  # Finished already: prints the stored results.
    out = capsys.readouterr().out
    assert "SASA model" in out and "conv baseline" in out
    assert f"{results['baseline']['params']:,}" in out
    assert os.path.join(config.output_dir, "results.json") in out


# Mixed precision.


def test_an_epoch_whose_loss_is_not_finite_raises_before_later_callbacks_record_it(tmp_path):
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(1e30), loss="mse")
    x, y = np.ones((8, 2), "float32"), np.full((8, 1), 1e20, "float32")
    history_path = str(tmp_path / "history.csv")
    checkpoint = run_callbacks.AtomicWeightsCheckpoint(str(tmp_path / "w.weights.h5"))
    callbacks = [run_callbacks.StopOnNonFiniteLoss(), checkpoint]
    callbacks.append(run_callbacks.EpochCSVLogger(history_path))
    with pytest.raises(run_callbacks.NonFiniteLoss) as error:
        model.fit(x, y, epochs=5, batch_size=4, callbacks=callbacks, verbose=0)
    (epoch, name), value = (error.value.epoch, error.value.name), error.value.value
    assert name == "loss" and not np.isfinite(value)
    assert checkpoint.last_saved_epoch == (epoch - 1 if epoch else None)
    assert history_epochs(history_path) == list(range(epoch))


def test_a_run_diverging_from_its_weight_decay_names_the_weight_decay(digits_dir, tmp_path):
    config = training.TrainConfig(
        data_dir=digits_dir, output_dir=str(tmp_path / "run"), epochs=1, batch_size=64,
        weight_decay=1e6, verbose=0, **TINY, **SLICES,
    )  # fmt: skip
    with pytest.raises(ValueError) as error:
        training.train(config, log=lambda message: None)
    assert str(error.value).startswith(
        f"{tmp_path / 'run'}: the training loss became nan in epoch 1 of 1. The weight decay, "
        "1e+06, is the most likely cause: each step multiplies the weights by 1 - learning "
        "rate x weight decay = -24999; train again with a --weight-decay well under 1 / "
        "learning rate = 40."
    ), str(error.value)
    assert os.listdir(tmp_path / "run") == ["diverged"]


def test_ema_is_seen_through_the_loss_scale_optimizer_of_mixed_float16():
    keras.mixed_precision.set_global_policy("mixed_float16")
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    model.compile(optimizer=recipe.make_optimizer(0.1, ema_momentum=0.9), loss="mse")
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    assert recipe.uses_ema(model.optimizer)
    callbacks = recipe.ema_callbacks(model.optimizer)
    assert [type(c) for c in callbacks] == [keras.callbacks.SwapEMAWeights]
    assert recipe.ema_callbacks(recipe.make_optimizer(0.1)) == []


def test_a_run_whose_steps_were_all_skipped_by_loss_scaling_is_refused():
    config = training.TrainConfig(epochs=2, mixed_precision="mixed_float16")
    optimizer = keras.optimizers.LossScaleOptimizer(recipe.make_optimizer(0.1))
    optimizer.build([keras.Variable(np.zeros(3, "float32"))])
    with pytest.raises(ValueError, match="none of the 8 training steps was taken"):
        recipe.check_steps_taken(optimizer, config, 4, "D")
    optimizer.iterations.assign(5)
    messages = []
    recipe.check_steps_taken(optimizer, config, 4, "D", log=messages.append)
    assert messages and "3 of 8 training steps were skipped" in messages[0]


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision_runs_validate_with_the_ema_weights(policy, digits_dir, tmp_path):
    config = training.TrainConfig(
        data_dir=digits_dir,
        output_dir=str(tmp_path / "run"),
        epochs=2,
        batch_size=16,  # 16 steps: float16 skips its first 8 (the loss scale 2**15 -> 2**7).
        ema_momentum=0.5,
        mixed_precision=policy,
        verbose=0,
        train_split="train[:128]",
        test_split="test[:64]",
        **TINY,
    )
    messages = []
    results = training.train(config, log=messages.append)
    rows = run_files.read_history(os.path.join(config.output_dir, "history.csv"))
    for column in ("loss", "accuracy", "val_loss", "val_accuracy", "learning_rate"):
        assert all(np.isfinite(float(row[column])) for row in rows), column
    # The last validation is that of the EMA weights, which the final evaluation uses.
    assert float(rows[-1]["val_loss"]) == pytest.approx(results["test_loss"], rel=1e-5)
    assert float(rows[-1]["val_accuracy"]) == pytest.approx(results["test_accuracy"])
    skipped = [m for m in messages if "training steps were skipped" in m]
    if policy == "mixed_float16":
        assert len(skipped) == 1 and "steps taken" in skipped[0]
    else:  # No loss scaling: every step is taken and the schedule ends at 0.
        assert skipped == []
        assert float(rows[-1]["learning_rate"]) == pytest.approx(0.0, abs=1e-7)


# Damaged backups: refused before training, one line naming the file.

CONV_ARGS = ["--stem", "conv_small", "--attention-stages", "none", "--epochs", "2"]
CONV_ARGS += ["--batch-size", "32", "--train-split", "train[:128]", "--test-split", "test[:64]"]
CONV_ARGS += TINY_ARGS


@pytest.fixture(scope="module")
def stopped_run(digits_dir, tmp_path_factory):
    """A 2-epoch run stopped after training, before results.json: its backup is whole."""
    from keras_sasa.training import run

    output_dir = str(tmp_path_factory.mktemp("stopped") / "run")
    write_json = run.run_files.write_json_atomically

    def stop_at_results(path, value):
        if path.endswith("results.json"):
            raise KeyboardInterrupt  # Stopped between fit and the results.
        write_json(path, value)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(run.run_files, "write_json_atomically", stop_at_results)
        argv = ["train", "--data-dir", digits_dir, "--output-dir", output_dir, *CONV_ARGS]
        assert cli.main(argv) == 130
    assert run_callbacks.backup_epoch(os.path.join(output_dir, "backup")) == 2
    return output_dir


def test_the_backup_holds_the_weights_file_the_checkpoint_wrote_at_the_same_epoch(stopped_run):
    # The backup copies the checkpoint's file instead of serialising the weights again.
    backup = open(os.path.join(stopped_run, "backup", "latest.weights.h5"), "rb").read()
    checkpoint = open(os.path.join(stopped_run, "checkpoints", "latest.weights.h5"), "rb").read()
    assert len(backup) > 10_000 and backup == checkpoint


def test_a_backup_without_a_checkpoint_of_its_epoch_writes_the_weights_itself(tmp_path):
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile("sgd", "mse")
    checkpoint = run_callbacks.AtomicWeightsCheckpoint(str(tmp_path / "checkpoint.weights.h5"))
    backup = run_callbacks.AtomicBackupAndRestore(
        str(tmp_path / "backup"), weights_from=checkpoint, delete_checkpoint=False
    )
    x, y = np.ones((4, 3)), np.zeros((4, 2))
    # The checkpoint writes every other epoch only: the backup must not copy a stale file.
    checkpoint.on_epoch_end = lambda epoch, logs=None: (
        None if epoch % 2 else run_callbacks.AtomicWeightsCheckpoint.on_epoch_end(
            checkpoint, epoch, logs
        )
    )  # fmt: skip
    model.fit(x, y, epochs=2, verbose=0, callbacks=[checkpoint, backup])
    restored = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    restored.compile("sgd", "mse")
    restored.optimizer.build(restored.trainable_variables)
    restored.load_weights(str(tmp_path / "backup" / "latest.weights.h5"))
    for a, b in zip(model.weights, restored.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def _truncate(path):
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)


def _set_epoch_99(path):
    with open(path, "w") as f:
        json.dump({"epoch": 99, "batch": 0}, f)


DAMAGES = {
    "truncated-weights": ("latest.weights.h5", _truncate),
    "empty-metadata": ("training_metadata.json", lambda path: open(path, "w").close()),
    "deleted-weights": ("latest.weights.h5", os.remove),
    "epoch-99": ("training_metadata.json", _set_epoch_99),
}


@pytest.mark.parametrize("damage", list(DAMAGES))
def test_a_damaged_backup_is_refused_naming_the_file(
    damage, stopped_run, digits_dir, tmp_path, capsys
):
    import shutil

    output_dir = str(tmp_path / "run")
    shutil.copytree(stopped_run, output_dir)
    name, damage_file = DAMAGES[damage]
    damaged = os.path.join(output_dir, "backup", name)
    damage_file(damaged)
    argv = ["train", "--data-dir", digits_dir, "--output-dir", output_dir, *CONV_ARGS]
    assert cli.main(argv) == 2
    out, err = capsys.readouterr()
    assert err.count("\n") == 1 and err.startswith("error: "), err
    assert f"Cannot resume the run in {output_dir}: {damaged}" in err
    assert f"Delete {os.path.join(output_dir, 'backup')} to train the run again" in err
    assert "resuming" not in out and "Epoch" not in out
    assert not os.path.exists(os.path.join(output_dir, "results.json"))


def test_a_backup_whose_epochs_have_no_history_rows_is_refused(tmp_path):
    backup = tmp_path / "backup"
    backup.mkdir()
    (backup / "latest.weights.h5").write_bytes(b"")
    (backup / "training_metadata.json").write_text('{"epoch": 2, "batch": 0}')
    history = tmp_path / "history.csv"
    history.write_text("epoch,loss\n0,1.0\n")
    with pytest.raises(ValueError, match=r"history.csv lacks the rows of 1 of the 2 epochs"):
        run_callbacks.check_backup(str(backup), 4, str(history), str(tmp_path))
    history.write_text("epoch,loss\n0,1.0\n1,0.9\n2,0.8")  # A row beyond: dropped later.
    assert run_callbacks.check_backup(str(backup), 4, str(history), str(tmp_path)) == 2
    (backup / "latest.weights.h5").unlink()
    (backup / "training_metadata.json").unlink()
    assert run_callbacks.check_backup(str(backup), 4, str(history), str(tmp_path)) == 0


def test_the_checkpoint_is_replaced_atomically(tmp_path, monkeypatch):
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    path = str(tmp_path / "checkpoints" / "latest.weights.h5")
    checkpoint = run_callbacks.AtomicWeightsCheckpoint(path)
    checkpoint.set_model(model)
    renamed = []
    real_replace = os.replace
    monkeypatch.setattr(os, "replace", lambda a, b: (renamed.append((a, b)), real_replace(a, b)))
    checkpoint.on_epoch_end(0)
    assert [b for _, b in renamed] == [path]
    assert os.path.dirname(renamed[0][0]) == os.path.dirname(path)  # Same directory.
    assert os.listdir(tmp_path / "checkpoints") == ["latest.weights.h5"]
    fresh = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    fresh.compile(optimizer="sgd", loss="mse")
    fresh.load_weights(path)
    np.testing.assert_array_equal(fresh.layers[0].kernel.numpy(), model.layers[0].kernel.numpy())
