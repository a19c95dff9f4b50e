"""keras_sasa.training and the `train` command in this process: outputs, resuming, errors.
(The command as a separate process, killed with SIGKILL and resumed: test_cli.py.)

The models are tiny (width 4, 2 heads, k = 3) and train on slices of digits, so that a run
takes seconds; most of its time is tracing and compiling.
"""

import contextlib
import glob
import io
import json
import os
import shutil

import keras
import numpy as np
import pytest

from keras_sasa import cli
from keras_sasa import data
from keras_sasa import distribute
from keras_sasa import training
from keras_sasa.training import callbacks as run_callbacks
from keras_sasa.training import recipe
from keras_sasa.training import run_files

TINY = dict(base_width=4, num_heads=2, kernel_size=3)
TINY_ARGS = ["--base-width", "4", "--num-heads", "2", "--kernel-size", "3"]
SLICES = dict(train_split="train[:256]", test_split="test[:128]")
SLICE_ARGS = ["--train-split", "train[:256]", "--test-split", "test[:128]"]
DEAD_PID = 2**22 + 1  # Above Linux's largest process id: no process has it.


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


# What the model builders refuse, refused by the configuration's check before anything is
# built: (the fields, the same model's builder arguments, the message).
REFUSED_BY_THE_BUILDERS = [
    (
        dict(kernel_size=4),
        dict(kernel_size=4),
        "Expected an odd value, so that the window is centred on its pixel. "
        "Received: kernel_size=4",
    ),
    (
        dict(num_heads=3, base_width=16),
        dict(num_heads=3, base_width=16),
        "group 1 is 16 wide (base_width=16). Received: num_heads=3",
    ),
    (
        dict(num_heads=64, base_width=8, attention_stages=(3, 4)),
        dict(num_heads=64, base_width=8, attention_stages=(3, 4)),
        "group 3 is 32 wide (base_width=8). Received: num_heads=64",
    ),
    (
        dict(stem="attention_small", base_width=6, num_heads=2),
        dict(stem="attention_small", base_width=6, num_heads=2),
        "Expected a multiple of the 'attention_small' stem's 4 attention heads. "
        "Received: base_width=6",
    ),
    (
        dict(stem="conv", stage_strides=(1, 2, 2, 2), image_size=16),
        dict(stem="conv", stackwise_strides=(1, 2, 2, 2), input_shape=(16, 16, 1)),
        "Expected at least 32: the 'conv' stem and the groups (strides (1, 2, 2, 2)) "
        "downsample the images by 32. Received: image_size=16",
    ),
]


@pytest.mark.parametrize("fields, arguments, message", REFUSED_BY_THE_BUILDERS)
def test_the_config_check_refuses_what_the_model_builder_refuses(fields, arguments, message):
    from keras_sasa import models
    from keras_sasa.training import config as config_module

    with pytest.raises(ValueError) as raised:
        config_module.check(training.TrainConfig(**fields))
    assert message in str(raised.value)
    builder_arguments = dict(input_shape=(32, 32, 1), classes=10, **TINY)
    with pytest.raises(ValueError):
        models.SASAResNet26(**{**builder_arguments, **arguments})


def test_train_refuses_a_model_that_the_chosen_defaults_make_invalid(digits_dir, tmp_path):
    # The stem and heads given, the strides and width chosen from the data: refused
    # after `resolve`, before a model is built or a file written.
    small = r"\(strides \(1, 1, 2, 2\)\) downsample the images by 16. Received: image_size=8"
    for fields, message in (
        (dict(stem="conv"), small),
        (dict(num_heads=3), r"16 wide \(base_width=16\). Received: num_heads=3"),
    ):
        output_dir = tmp_path / "never"
        config = training.TrainConfig(data_dir=digits_dir, output_dir=str(output_dir), **fields)
        with pytest.raises(ValueError, match=message):
            training.train(config, log=lambda line: None)
        assert not output_dir.exists()


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


def test_history_logger_keeps_the_last_row_of_an_epoch_written_twice(tmp_path):
    path = str(tmp_path / "history.csv")
    with open(path, "w") as f:
        f.write("epoch,loss\n0,1.0\n1,0.9\n0,0.95\n2,0.8\n3,0.7\n")
    logger = run_callbacks.EpochCSVLogger(path)
    logger.on_train_begin()
    logger.on_epoch_begin(3)
    logger.on_epoch_end(3, {"loss": 0.6})
    logger.on_train_end()
    assert history_epochs(path) == [0, 1, 2, 3]
    assert [row["loss"] for row in run_files.read_history(path)] == ["0.95", "0.9", "0.8", "0.6"]


def test_history_logger_starting_at_epoch_0_replaces_whatever_the_file_held(tmp_path):
    path = tmp_path / "history.csv"
    path.write_bytes(b"\x89PNG\xff\xfe junk\n\x00\x01\n")
    logger = run_callbacks.EpochCSVLogger(str(path))
    logger.on_train_begin()
    logger.on_epoch_begin(0)
    logger.on_epoch_end(0, {"loss": 0.5})
    logger.on_train_end()
    rows = run_files.read_history(str(path))
    assert [(row["epoch"], row["loss"]) for row in rows] == [("0", "0.5")]


def test_a_history_file_that_is_not_text_is_named(tmp_path):
    path = tmp_path / "history.csv"
    path.write_bytes(b"epoch,loss\n0,\xff\xfe\n")
    with pytest.raises(ValueError, match=f"^{path} is not UTF-8 text"):
        run_files.read_history(str(path))


def test_temporary_files_of_processes_that_ended_are_removed(tmp_path):
    dead = DEAD_PID
    ours = f".partial-{os.getpid()}-x"  # This process writes one file at a time.
    for name in (f".partial-{dead}-model.keras", f".write-test-{dead}", ours):
        (tmp_path / name).write_bytes(b"x")
    # A process that still runs may be writing its file now.
    running = tmp_path / f".partial-{os.getppid()}-results.json"
    running.write_bytes(b"x")
    kept = [".partial", ".partial-x-y", f".partial{dead}-z", "model.keras"]
    for name in kept:
        (tmp_path / name).write_bytes(b"x")
    run_files.remove_leftovers(str(tmp_path))
    assert sorted(os.listdir(tmp_path)) == sorted([running.name, *kept])


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
        (["--stem", "attention"], "downsample the images by 16. Received: image_size=8"),
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
    assert recipe.check_steps_taken(optimizer, config, 4, "D", log=messages.append) == 3
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
    slow = [m for m in messages if "mixed_float16 is slower than float32 here" in m]
    if policy == "mixed_float16":
        assert len(skipped) == 1 and "steps taken" in skipped[0]
        # "D: 8 of 16 training steps were skipped ...": results.json keeps the 8.
        count = int(skipped[0].split(": ", 1)[1].split()[0])
        assert results["skipped_steps"] == count > 0
        # One line where no device computes fast in float16 (a CPU).
        assert len(slow) == (0 if distribute.has_fast_float16() else 1)
    else:  # No loss scaling: every step is taken and the schedule ends at 0.
        assert skipped == [] and results["skipped_steps"] == 0 and slow == []
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


def _refused(run_dir, digits_dir, capsys):
    """The CONV_ARGS run in `run_dir`, refused in one line: (stdout, stderr)."""
    argv = ["train", "--data-dir", digits_dir, "--output-dir", run_dir, *CONV_ARGS]
    assert cli.main(argv) == 2
    out, err = capsys.readouterr()
    assert err.count("\n") == 1 and err.startswith("error: "), err
    return out, err


def _truncate(path):
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)


def _set_epoch_99(path):
    with open(path, "w") as f:
        json.dump({"epoch": 99, "batch": 0}, f)


def _another_models_weights(path, epoch=2):
    """Replaces the weights at `path` by those of another model, recording `epoch`."""
    import h5py

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile("sgd", "mse")
    model.optimizer.build(model.trainable_variables)
    model.save_weights(path, overwrite=True)
    if epoch is not None:
        with h5py.File(path, "r+") as f:
            f.attrs[run_callbacks.BACKUP_EPOCH_ATTRIBUTE] = epoch


def _record_epoch_1(path):
    import h5py

    with h5py.File(path, "r+") as f:
        f.attrs[run_callbacks.BACKUP_EPOCH_ATTRIBUTE] = 1


DAMAGES = {
    "truncated-weights": ("latest.weights.h5", _truncate),
    "empty-metadata": ("training_metadata.json", lambda path: open(path, "w").close()),
    "deleted-weights": ("latest.weights.h5", os.remove),
    "epoch-99": ("training_metadata.json", _set_epoch_99),
    # Keras would load what matches and warn about the rest.
    "another-models-weights": ("latest.weights.h5", _another_models_weights),
    "weights-recording-no-epoch": (
        "latest.weights.h5",
        lambda path: _another_models_weights(path, epoch=None),
    ),
    # Epoch 1's weights under epoch 2's metadata: no kill leaves weights behind.
    "weights-of-an-earlier-epoch": ("latest.weights.h5", _record_epoch_1),
}


@pytest.mark.parametrize("damage", list(DAMAGES))
def test_a_damaged_backup_is_refused_naming_the_file(
    damage, stopped_run, digits_dir, tmp_path, capsys
):
    output_dir = str(tmp_path / "run")
    shutil.copytree(stopped_run, output_dir)
    name, damage_file = DAMAGES[damage]
    damaged = os.path.join(output_dir, "backup", name)
    damage_file(damaged)
    out, err = _refused(output_dir, digits_dir, capsys)
    assert f"Cannot resume the run in {output_dir}: {damaged}" in err
    assert f"Delete {os.path.join(output_dir, 'backup')} to train the run again" in err
    assert "resuming" not in out and "Epoch" not in out
    assert not os.path.exists(os.path.join(output_dir, "results.json"))


def _weights_of_epoch(path, epoch):
    """A weights file (without weights) that records `epoch` as a backup's does."""
    import h5py

    with h5py.File(path, "w") as f:
        f.attrs[run_callbacks.BACKUP_EPOCH_ATTRIBUTE] = epoch


def _backup_of_epoch(tmp_path, epoch):
    """A backup directory whose weights and metadata both record `epoch`."""
    backup = tmp_path / "backup"
    backup.mkdir()
    _weights_of_epoch(backup / "latest.weights.h5", epoch)
    (backup / "training_metadata.json").write_text(f'{{"epoch": {epoch}, "batch": 0}}')
    return backup


def test_a_backup_whose_epochs_have_no_history_rows_is_refused(tmp_path):
    backup = _backup_of_epoch(tmp_path, 2)
    history = tmp_path / "history.csv"
    history.write_text("epoch,loss\n0,1.0\n")
    with pytest.raises(ValueError, match=r"history.csv lacks the rows of 1 of the 2 epochs"):
        run_callbacks.check_backup(str(backup), 4, str(history), str(tmp_path))
    history.write_text("epoch,loss\n0,1.0\n1,0.9\n2,0.8")  # A row beyond: dropped later.
    assert run_callbacks.check_backup(str(backup), 4, str(history), str(tmp_path)) == 2
    (backup / "latest.weights.h5").unlink()
    (backup / "training_metadata.json").unlink()
    assert run_callbacks.check_backup(str(backup), 4, str(history), str(tmp_path)) == 0


def test_history_rows_that_are_not_numbers_under_the_runs_columns_are_refused(tmp_path):
    backup = _backup_of_epoch(tmp_path, 1)
    history = tmp_path / "history.csv"
    columns = ("epoch", "loss", "accuracy")
    for text, problem in [
        ("epoch,loss\n0,1.0\n", "has no column accuracy"),
        ("epoch,loss,accuracy\n0,\x00\x00,0.5\n", "holds a damaged row for epoch 0"),
        ("epoch,loss,accuracy\n0,1.0\n", "holds a damaged row for epoch 0"),
        ("epoch,loss,accuracy\n0,1.0,0.5,7\n", "holds a damaged row for epoch 0"),
    ]:
        history.write_text(text)
        with pytest.raises(ValueError, match=f"{history} {problem}"):
            run_callbacks.check_backup(str(backup), 4, str(history), "D", columns=columns)
    history.write_text("epoch,loss,accuracy,top5\n0,1.0,0.5,NA\n1,x,y\n")  # Epoch 1: dropped.
    assert run_callbacks.check_backup(str(backup), 4, str(history), "D", columns=columns) == 1


def test_first_backup_weights_without_their_metadata_are_resumed_at_their_epoch(tmp_path):
    """A kill between the two renames of the first backup leaves its weights alone."""
    backup = tmp_path / "backup"
    backup.mkdir()
    _weights_of_epoch(backup / "latest.weights.h5", 1)
    history = tmp_path / "history.csv"
    history.write_text("epoch,loss\n0,1.0\n")
    messages = []
    epoch = run_callbacks.check_backup(str(backup), 4, str(history), "D", messages.append)
    assert epoch == 1 and run_callbacks.backup_epoch(str(backup)) == 1
    assert messages == [
        f"D: the backup's metadata was missing, its weights epoch 1 (stopped between the two "
        f"writes); {backup / 'training_metadata.json'} now gives epoch 1."
    ]
    # Weights of a later epoch cannot have lost their metadata to a kill.
    (backup / "training_metadata.json").unlink()
    _weights_of_epoch(backup / "latest.weights.h5", 2)
    with pytest.raises(ValueError, match="training_metadata.json is missing"):
        run_callbacks.check_backup(str(backup), 4, str(history), "D")


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


def _resume(run_dir, digits_dir):
    """Runs the CONV_ARGS run in `run_dir` to its end: (exit code, what it printed)."""
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = cli.main(["train", "--data-dir", digits_dir, "--output-dir", run_dir, *CONV_ARGS])
    return code, printed.getvalue()


@pytest.fixture(scope="module")
def resumed_runs(stopped_run, digits_dir, tmp_path_factory):
    """`stopped_run` resumed to its end twice: "whole" as it was stopped, and "repaired"
    with its backup's metadata one epoch behind its weights (as a kill between the
    backup's two renames leaves it), epoch 0's history row written thrice, and the
    temporary files of a killed writer in its directories.
    {name: (run directory, what the run printed)}."""
    base = tmp_path_factory.mktemp("resumed")
    runs = {}
    for name in ("whole", "repaired"):
        run_dir = str(base / name)
        shutil.copytree(stopped_run, run_dir)
        if name == "repaired":
            with open(os.path.join(run_dir, "backup", "training_metadata.json"), "w") as f:
                json.dump({"epoch": 1, "batch": 3}, f)
            with open(os.path.join(run_dir, "history.csv")) as f:
                header, first, *rest = f.readlines()
            with open(os.path.join(run_dir, "history.csv"), "w") as f:
                f.writelines([header, first, first, *rest, first])  # Epoch 0 three times.
            for directory in ("", "checkpoints", "backup"):
                leftover = os.path.join(run_dir, directory, f".partial-{DEAD_PID}-model.keras")
                with open(leftover, "wb") as f:
                    f.write(b"PK" * 1000)
        code, printed = _resume(run_dir, digits_dir)
        assert code == 0, printed[-2000:]
        runs[name] = run_dir, printed
    return runs


def _results(run_dir):
    with open(os.path.join(run_dir, "results.json")) as f:
        return json.load(f)


def test_a_run_stopped_after_training_only_evaluates_and_saves_when_started_again(resumed_runs):
    # `stopped_run` was stopped between fit and results.json with its backup of epoch 2.
    run_dir, printed = resumed_runs["whole"]
    assert "resuming after epoch 2 of 2" in printed
    assert history_epochs(os.path.join(run_dir, "history.csv")) == [0, 1]
    results = _results(run_dir)
    assert results["epochs"] == 2 and 0.0 <= results["test_accuracy"] <= 1.0
    assert os.path.exists(os.path.join(run_dir, "results.json"))
    assert not os.path.exists(os.path.join(run_dir, "backup"))


def test_backup_weights_one_epoch_ahead_of_their_metadata_resume_at_their_epoch(resumed_runs):
    (whole, _), (repaired, printed) = resumed_runs["whole"], resumed_runs["repaired"]
    assert "the backup's metadata gave epoch 1, its weights epoch 2" in printed
    assert "resuming after epoch 2 of 2" in printed and "Epoch 2/2" not in printed
    ours, reference = _results(repaired), _results(whole)
    assert ours["test_loss"] == pytest.approx(reference["test_loss"], rel=1e-6)
    assert ours["test_accuracy"] == reference["test_accuracy"]


def test_an_epoch_with_several_history_rows_keeps_one_when_the_run_resumes(resumed_runs):
    (whole, _), (repaired, _) = resumed_runs["whole"], resumed_runs["repaired"]
    histories = [open(os.path.join(d, "history.csv")).read() for d in (repaired, whole)]
    assert histories[0] == histories[1]
    assert history_epochs(os.path.join(repaired, "history.csv")) == [0, 1]
    ours, reference = _results(repaired), _results(whole)
    for key in ("final_train_accuracy", "train_seconds", "train_images_per_second"):
        assert ours[key] == reference[key], key


def test_temporary_files_a_killed_run_left_are_removed_when_it_resumes(resumed_runs):
    run_dir, _ = resumed_runs["repaired"]
    found = glob.glob(os.path.join(run_dir, "**", ".partial-*"), recursive=True)
    assert found == []
    assert os.path.exists(os.path.join(run_dir, "checkpoints", "latest.weights.h5"))


def test_results_record_the_model_files_checksum_and_the_skipped_steps(resumed_runs):
    run_dir, _ = resumed_runs["whole"]
    results = _results(run_dir)
    assert results["model_sha256"] == run_files.file_sha256(os.path.join(run_dir, "model.keras"))
    assert results["skipped_steps"] == 0  # float32: no loss scaling.


def _replace_json(change):
    def damage(path):
        with open(path) as f:
            value = json.load(f)
        with open(path, "w") as f:
            json.dump(change(value), f)

    return damage


def _write_bytes(content):
    def damage(path):
        with open(path, "wb") as f:
            f.write(content)

    return damage


# A finished run: (file, damage, what the message says of the file).
FINISHED_DAMAGES = {
    "results-list": ("results.json", _write_bytes(b"[]"), "is damaged (a JSON list, not"),
    "results-empty": ("results.json", _write_bytes(b"{}"), "is damaged (no 'config', 'model',"),
    "results-null": ("results.json", _write_bytes(b"null"), "is damaged (a JSON null, not"),
    "results-without-config": (
        "results.json",
        _replace_json(lambda r: {k: v for k, v in r.items() if k != "config"}),
        "is damaged (no 'config')",
    ),
    "results-with-an-empty-config": (
        "results.json",
        _replace_json(lambda r: {**r, "config": {}}),
        "is damaged (its 'config' is not a run's configuration)",
    ),
    "results-binary": (
        "results.json",
        _write_bytes(b"\x89PNG\r\n\x1a\n\xff\x00"),
        "is damaged (not UTF-8 text",
    ),
    "model-truncated": ("model.keras", _truncate, "is damaged (not the file saved"),
    "model-missing": ("model.keras", os.remove, "is missing"),
}


@pytest.mark.parametrize("damage", list(FINISHED_DAMAGES))
def test_a_finished_run_with_a_damaged_file_is_refused_naming_it(
    damage, resumed_runs, digits_dir, tmp_path, capsys
):
    run_dir = str(tmp_path / "run")
    shutil.copytree(resumed_runs["whole"][0], run_dir)
    name, damage_file, problem = FINISHED_DAMAGES[damage]
    path = os.path.join(run_dir, name)
    damage_file(path)
    out, err = _refused(run_dir, digits_dir, capsys)
    assert f"{path} {problem}" in err
    assert "another configuration" not in err
    assert "already trained" not in out and "Epoch" not in out


@pytest.mark.parametrize(
    "name, content, problem",
    [
        ("config.json", b"[]", "is damaged (a JSON list, not an object)"),
        ("config.json", b"{}", "is damaged (no 'dataset', 'model', 'epochs')"),
        ("history.csv", b"epoch,loss\n0,\xff\xfe\n1,2.0\n", "is not UTF-8 text"),
    ],
    ids=["config-list", "config-empty", "history-binary"],
)
def test_a_stopped_run_with_a_damaged_file_is_refused_naming_it(
    name, content, problem, stopped_run, digits_dir, tmp_path, capsys
):
    run_dir = str(tmp_path / "run")
    shutil.copytree(stopped_run, run_dir)
    path = os.path.join(run_dir, name)
    _write_bytes(content)(path)
    out, err = _refused(run_dir, digits_dir, capsys)
    assert f"{path} {problem}" in err
    assert "another configuration" not in err and "resuming" not in out
