"""keras_sasa.tuning and `python -m keras_sasa tune`: the search, its results, resuming, errors.

The searches are tiny (width 4 or 8, the conv stem, attention in group 4 only, one epoch
on digits) so that a trial takes seconds, most of it tracing the training step.
"""

import json
import os
import shutil

import keras_tuner
import numpy as np
import pytest

from keras_sasa import cli
from keras_sasa import training
from keras_sasa import tuning
from keras_sasa.layers import LocalSelfAttention2D
from keras_sasa.tuning import SASAHyperModel
from keras_sasa.tuning import SearchSpace

SPACE = dict(
    kernel_size=(3, 5),
    num_heads=(1, 2),
    stem="conv_small",
    attention_stages=[(4,)],
    base_width=(4, 8),
    learning_rate=(0.01, 0.1),
    weight_decay=(0.0, 1e-4),
    label_smoothing=(0.0, 0.1),
)
SPACE_ARGS = [
    "--kernel-sizes", "3,5",
    "--num-heads", "1,2",
    "--stems", "conv_small",
    "--attention-stages", "4",
    "--base-widths", "4,8",
    "--learning-rate", "0.01:0.1",
    "--weight-decay", "0:1e-4",
    "--label-smoothing", "0:0.1",
]  # fmt: skip


def tiny_config(data_dir, **changes):
    return training.TrainConfig(data_dir=data_dir, epochs=1, batch_size=128, verbose=0, **changes)


@pytest.fixture(scope="module")
def finished_search(digits_dir, tmp_path_factory):
    """A random search of two trials on digits (training split, 20% held out)."""
    output_dir = str(tmp_path_factory.mktemp("search"))
    results = tuning.search(
        tiny_config(digits_dir),
        SearchSpace(**SPACE),
        max_trials=2,
        output_dir=output_dir,
        log=lambda message: None,
    )
    return output_dir, results


def copy_search(finished_search, tmp_path):
    output_dir, _ = finished_search
    copy = str(tmp_path / "search")
    shutil.copytree(output_dir, copy)
    return copy


def count_fits(monkeypatch, fail_first=False):
    """Counts the trials trained; with `fail_first` the first one is killed (^C)."""
    calls = []
    fit = SASAHyperModel.fit

    def counting_fit(self, hp, model, *args, **kwargs):
        calls.append(dict(hp.values))
        if fail_first and len(calls) == 1:
            raise KeyboardInterrupt
        return fit(self, hp, model, *args, **kwargs)

    monkeypatch.setattr(SASAHyperModel, "fit", counting_fit)
    return calls


def in_space(values):
    return (
        values["kernel_size"] in (3, 5)
        and values["num_heads"] in (1, 2)
        and values["stem"] == "conv_small"
        and values["attention_stages"] == "4"
        and values["use_relative_position"] in (True, False)
        and values["base_width"] in (4, 8)
        and 0.01 <= values["learning_rate"] <= 0.1
        and 0.0 <= values["weight_decay"] <= 1e-4
        and 0.0 <= values["label_smoothing"] <= 0.1
    )


# The search space.


def test_default_space_is_the_papers_design_space_with_stems_for_the_image_size(digits_dir):
    hypermodel = SASAHyperModel(training.TrainConfig(data_dir=digits_dir))
    _, space, _, _ = hypermodel.prepare()
    assert space.kernel_size == (3, 5, 7, 9, 11)
    assert space.num_heads == (1, 2, 4, 8)
    assert space.stem == ("attention_small", "conv_small")
    assert space.attention_stages == ((1, 2, 3, 4), (2, 3, 4), (3, 4), (4,))
    assert space.stage_strides == ((1, 1, 2, 2),)
    assert space.use_relative_position == (True, False)
    # 0.1 per 256 images at the default batch of 64, times 1/4 and 4.
    assert space.learning_rate == pytest.approx((0.025 / 4, 0.025 * 4))


def test_one_value_fixes_a_hyperparameter():
    space = SearchSpace(kernel_size=5, num_heads=4, learning_rate=0.05, stem="conv")
    assert (space.kernel_size, space.num_heads, space.learning_rate) == ((5,), (4,), (0.05, 0.05))
    hp = keras_tuner.HyperParameters()
    values = space.resolve(training.TrainConfig(image_size=224, batch_size=64)).declare(hp)
    assert (values["kernel_size"], values["num_heads"], values["learning_rate"]) == (5, 4, 0.05)
    assert (values["kernel_size"], values["num_heads"], values["learning_rate"]) == (5, 4, 0.05)
    kinds = {h.name: type(h).__name__ for h in hp.space}
    assert (kinds["kernel_size"], kinds["weight_decay"]) == ("Fixed", "Float")


@pytest.mark.parametrize(
    "arguments, error, message",
    [
        (dict(kernel_size=()), ValueError, "Expected at least one value. Received: kernel_size=()"),
        (
            dict(kernel_size=(3, 4)),
            ValueError,
            "Expected an odd value, so that the window is centred on its pixel. "
            "Received: kernel_size=(3, 4)",
        ),
        (dict(kernel_size="3"), TypeError, "`kernel_size`"),
        (dict(num_heads=(0,)), ValueError, "num_heads=(0,)"),
        (dict(num_heads=3), ValueError, "3 does not divide 16"),
        (dict(stem="conv_big"), ValueError, "stem='conv_big'"),
        (dict(attention_stages=[(1, 5)]), ValueError, "attention_stages=[(1, 5)]"),
        (dict(stage_strides=[(1, 2, 2)]), ValueError, "stage_strides=[(1, 2, 2)]"),
        (
            dict(stage_strides=[(1, 0, 2, 2)]),
            ValueError,
            "Expected 4 positive integers, one per group. Received: stage_strides=[(1, 0, 2, 2)]",
        ),
        (dict(use_relative_position="on"), TypeError, "use_relative_position='on'"),
        (dict(learning_rate=(0.1, 0.01)), ValueError, "inverted (min > max)"),
        (dict(learning_rate=()), ValueError, "Expected (min, max); the range is empty"),
        (dict(learning_rate=(0.0, 0.1)), ValueError, "> 0. Received: learning_rate=(0.0, 0.1)"),
        (dict(weight_decay=(-1e-4, 0.0)), ValueError, "Expected values >= 0"),
        (dict(label_smoothing=(0.0, 1.0)), ValueError, "Expected values < 1"),
        (dict(label_smoothing=(0.0, float("nan"))), ValueError, "Expected finite numbers"),
    ],
)
def test_bad_search_space_raises_naming_the_argument_and_value(arguments, error, message):
    with pytest.raises(error) as raised:
        SearchSpace(**arguments)
    assert message in str(raised.value)


def test_stage_sets_may_be_written_as_the_tuner_stores_them():
    space = SearchSpace(attention_stages=["2,3,4", "none"], stage_strides="1,1,2,2")
    assert space.attention_stages == ((2, 3, 4), ())
    assert space.stage_strides == ((1, 1, 2, 2),)
    with pytest.raises(ValueError, match=r"Received: attention_stages=\['2,x'\]"):
        SearchSpace(attention_stages=["2,x"])


def test_stage_strides_are_searched_as_choices_and_reach_the_config():
    space = SearchSpace(stage_strides=((1, 2, 2, 2), (1, 1, 2, 2)), stem="conv_small")
    hp = keras_tuner.HyperParameters()
    values = space.resolve(training.TrainConfig(image_size=8, batch_size=64)).declare(hp)
    choice = {h.name: h for h in hp.space}["stage_strides"]
    assert type(choice).__name__ == "Choice" and choice.values == ["1,2,2,2", "1,1,2,2"]
    assert values["stage_strides"] == "1,2,2,2"
    config = tuning.config_for(training.TrainConfig(), {"stage_strides": "1,1,2,2"})
    assert config.stage_strides == (1, 1, 2, 2)
    assert space.resolve(training.TrainConfig(image_size=8, batch_size=64)).contains(
        {**hp.values, "stage_strides": "1,1,2,2"}
    )


@pytest.mark.parametrize(
    "split, error, message",
    [
        (0.0, ValueError, "Received: validation_split=0.0"),
        (1.0, ValueError, "Received: validation_split=1.0"),
        ("0.2", TypeError, "Received: validation_split='0.2'"),
    ],
)
def test_bad_validation_split_raises_naming_it(split, error, message, digits_dir):
    with pytest.raises(error, match="`validation_split`") as raised:
        SASAHyperModel(tiny_config(digits_dir), validation_split=split)
    assert message in str(raised.value)


def test_a_validation_split_of_a_sliced_training_split_is_refused(digits_dir):
    config = tiny_config(digits_dir, train_split="train[:256]")
    with pytest.raises(ValueError, match="'train\\[:256\\]' is already a slice"):
        SASAHyperModel(config, validation_split=0.2)


def test_a_stem_too_large_for_the_images_is_refused_before_searching(digits_dir):
    hypermodel = SASAHyperModel(tiny_config(digits_dir), SearchSpace(stem=("conv", "conv_small")))
    with pytest.raises(
        ValueError,
        match=r"the 'conv' stem and the four groups downsample by 16 \(group strides 1,1,2,2\)",
    ):
        hypermodel.prepare()


@pytest.mark.parametrize(
    "arguments, error, message",
    [
        (dict(tuner="grid"), ValueError, "Expected one of ('random', 'hyperband', 'bayesian')"),
        (dict(max_trials=0), ValueError, "Received: max_trials=0"),
        (dict(max_trials=2.5), TypeError, "`max_trials`"),
        (dict(epochs=0), ValueError, "Received: epochs=0"),
        (dict(hyperband_factor=1), ValueError, "Received: hyperband_factor=1"),
        (dict(epochs=10**20), ValueError, "Expected a value in [1, 1000] (the run builds"),
        (dict(validation_split=float("inf")), ValueError, "Expected a finite value."),
    ],
)
def test_bad_search_arguments_raise_before_anything_is_written(arguments, error, message, tmp_path):
    output_dir = tmp_path / "never"
    with pytest.raises(error) as raised:
        tuning.search(output_dir=str(output_dir), **arguments)
    assert message in str(raised.value)
    assert not output_dir.exists()


def test_a_trial_whose_loss_is_not_finite_fails_rather_than_scores(digits_dir, tmp_path):
    results = tuning.search(
        tiny_config(digits_dir),
        SearchSpace(**{**SPACE, "learning_rate": 1e10}),
        max_trials=1,
        output_dir=str(tmp_path / "search"),
        log=lambda message: None,
    )
    assert [trial["status"] for trial in results["trials"]] == ["FAILED"]
    assert results["best_score"] is None


# The command line: errors.


@pytest.mark.parametrize(
    "args, message",
    [
        (["--tuner", "grid"], "Invalid value for argument `tuner`"),
        (["--max-trials", "0"], "Received: max_trials=0"),
        (["--kernel-sizes", "3,4"], "Received: kernel_size=(3, 4)"),
        (["--kernel-sizes", "three"], "Invalid value for --kernel-sizes: cannot read 'three'"),
        (["--learning-rate", "0.1:0.001"], "the range is inverted"),
        (["--weight-decay", "1:2:3"], "expected MIN:MAX or a number"),
        (["--relative-position", "maybe"], "cannot read 'maybe'"),
        (["--stems", "conv"], "the 'conv' stem and the four groups downsample by 16"),
        (["--stage-strides", "1,x,2,2"], "Invalid value for --stage-strides: expected integers"),
        (["--stage-strides", "1,2,2,2;1,2"], "Received: stage_strides=((1, 2, 2, 2), (1, 2))"),
        (["--stage-strides", "-1,1,1,1"], "Received: stage_strides=((-1, 1, 1, 1),)"),
        (["--learning-rate", "inf"], "Expected finite numbers. Received: learning_rate=inf"),
        (["--learning-rate", "-1"], "Expected values > 0. Received: learning_rate=-1.0"),
        (["--epochs", "99999999999999999999"], "--epochs: expected an integer in [1, 1000] (the"),
        (["--image-size", "100000"], "expected an integer in [1, 4096] (larger images do not"),
        (["--base-widths", "8,5000"], "Expected a value in [1, 1024] (wider models do not fit"),
    ],
)
def test_bad_input_is_one_line_on_stderr_and_a_nonzero_exit(
    args, message, digits_dir, tmp_path, capsys
):
    argv = ["tune", "--data-dir", digits_dir, "--output-dir", str(tmp_path / "out"), *args]
    try:
        code = cli.main(argv)
    except SystemExit as exit:  # argparse's errors
        code = exit.code
    err = capsys.readouterr().err
    assert code != 0
    assert err.count("\n") == 1 and err.endswith("\n"), err
    assert "Traceback" not in err
    assert message in err


# A finished search.


def test_results_json_holds_every_trial_with_values_in_the_space(finished_search):
    output_dir, results = finished_search
    with open(os.path.join(output_dir, "tuning_results.json")) as f:
        stored = json.load(f)
    assert stored == json.loads(json.dumps(results))
    assert [t["trial_id"] for t in stored["trials"]] == ["0", "1"]
    for trial in stored["trials"]:
        assert trial["status"] == "COMPLETED"
        assert in_space(trial["hyperparameters"]), trial["hyperparameters"]
        assert 0.0 <= trial["score"] <= 1.0
    # Two random draws from a continuous range differ.
    rates = {t["hyperparameters"]["learning_rate"] for t in stored["trials"]}
    assert len(rates) == 2


def test_best_score_is_the_highest_trial_score_and_its_hyperparameters(finished_search):
    _, results = finished_search
    scores = [t["score"] for t in results["trials"]]
    assert results["best_score"] == max(scores)
    best = next(t for t in results["trials"] if t["trial_id"] == results["best_trial_id"])
    assert best["score"] == max(scores)
    assert results["best_hyperparameters"] == best["hyperparameters"]
    assert results["objective"] == "val_accuracy" and results["direction"] == "max"


def test_trials_are_scored_on_the_held_out_fifth_of_the_training_split(finished_search):
    _, results = finished_search
    config = results["settings"]["config"]
    assert (config["train_split"], config["test_split"]) == ("train[:80%]", "train[80%:]")
    # TFDS rounds 80% of 1,437 to 1,150: 287 held-out images, so every score is a
    # multiple of 1/287.
    for trial in results["trials"]:
        assert trial["score"] * 287 == pytest.approx(round(trial["score"] * 287), abs=1e-4)


def test_ranked_table_lists_the_best_trial_first(finished_search):
    _, results = finished_search
    lines = tuning.format_table(results).splitlines()
    assert lines[0].split()[:4] == ["rank", "trial", "val_accuracy", "k"]
    assert len(lines) == 3
    first = lines[1].split()
    assert first[:3] == ["1", results["best_trial_id"], f"{results['best_score']:.4f}"]


def test_best_model_rebuilds_from_the_best_hyperparameters_and_trains(finished_search, digits_dir):
    _, results = finished_search
    best = results["best_hyperparameters"]
    hypermodel = SASAHyperModel(tiny_config(digits_dir), SearchSpace(**SPACE))
    hp = hypermodel.hyperparameters(best)
    model = hypermodel.build(hp)
    attention = [layer for layer in model.layers if isinstance(layer, LocalSelfAttention2D)]
    assert [layer.name for layer in attention] == ["conv5_block1_attn"]  # Group 4 only.
    layer = attention[0]
    # Group 4's first block attends over the 2x2 map of 8x8 digits: its window is cut to 3.
    assert layer.kernel_size == min(best["kernel_size"], 3)
    assert layer.num_heads == best["num_heads"]
    assert layer.use_relative_position == best["use_relative_position"]
    assert layer.filters == 8 * best["base_width"]
    before = model.get_layer("conv2_block1_1_conv").kernel.numpy().copy()
    history = hypermodel.fit(hp, model, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][-1])
    assert 0.0 <= history.history["val_accuracy"][-1] <= 1.0
    after = model.get_layer("conv2_block1_1_conv").kernel.numpy()
    assert not np.allclose(before, after)


def test_best_hyperparameters_give_the_train_commands_config(finished_search, digits_dir):
    _, results = finished_search
    best = results["best_hyperparameters"]
    config = tuning.config_for(tiny_config(digits_dir), best)
    assert isinstance(config, training.TrainConfig)
    assert (config.kernel_size, config.num_heads, config.base_width) == (
        best["kernel_size"],
        best["num_heads"],
        best["base_width"],
    )
    assert config.attention_stages == (4,) and config.stem == "conv_small"
    assert config.learning_rate == pytest.approx(best["learning_rate"])


# Resuming.


def test_an_interrupted_search_continues_from_the_command_line_with_only_the_missing_trial(
    finished_search, digits_dir, tmp_path, monkeypatch, capsys
):
    _, first = finished_search
    output_dir = copy_search(finished_search, tmp_path)
    calls = count_fits(monkeypatch, fail_first=True)
    with pytest.raises(KeyboardInterrupt):  # Killed in trial 2 of 3.
        tuning.search(
            tiny_config(digits_dir),
            SearchSpace(**SPACE),
            max_trials=3,
            output_dir=output_dir,
            log=lambda message: None,
        )
    interrupted = calls[0]

    # The same search from the command line (the test's tiny_config and SPACE).
    argv = ["tune", "--data-dir", digits_dir, "--output-dir", output_dir, "--max-trials", "3"]
    argv += ["--epochs", "1", "--batch-size", "128", *SPACE_ARGS]
    assert cli.main(argv) == 0
    # Only the interrupted trial ran again, with the same values; trials 0 and 1 were kept.
    assert len(calls) == 2 and calls[1] == interrupted
    with open(os.path.join(output_dir, "tuning_results.json")) as f:
        results = json.load(f)
    assert [t["trial_id"] for t in results["trials"]] == ["0", "1", "2"]
    assert results["trials"][:2] == first["trials"]
    assert results["trials"][2]["status"] == "COMPLETED"
    assert in_space(results["trials"][2]["hyperparameters"])
    assert results["best_score"] == max(t["score"] for t in results["trials"])
    # The ranked table: three trials, best first.
    out = capsys.readouterr().out
    table = out[out.index("rank  trial") :].splitlines()[:4]
    assert [row.split()[0] for row in table[1:]] == ["1", "2", "3"]
    assert table[1].split()[1:3] == [results["best_trial_id"], f"{results['best_score']:.4f}"]
    assert os.path.join(output_dir, "tuning_results.json") in out


def test_a_finished_search_started_again_trains_nothing(
    finished_search, digits_dir, tmp_path, monkeypatch
):
    _, first = finished_search
    output_dir = copy_search(finished_search, tmp_path)
    calls = count_fits(monkeypatch)
    results = tuning.search(
        tiny_config(digits_dir),
        SearchSpace(**SPACE),
        max_trials=2,
        output_dir=output_dir,
        log=lambda message: None,
    )
    assert calls == []
    assert results["trials"] == first["trials"]


def test_a_search_with_other_settings_in_the_same_directory_is_refused(
    finished_search, digits_dir, tmp_path
):
    output_dir = copy_search(finished_search, tmp_path)
    narrower = SearchSpace(**{**SPACE, "kernel_size": (3,)})
    with pytest.raises(ValueError, match=r"other settings \(space.kernel_size=\[3, 5\] there"):
        tuning.search(tiny_config(digits_dir), narrower, max_trials=2, output_dir=output_dir)
    with pytest.raises(ValueError, match="tuner='random' there, 'bayesian' here"):
        tuning.search(
            tiny_config(digits_dir),
            SearchSpace(**SPACE),
            tuner="bayesian",
            max_trials=2,
            output_dir=output_dir,
        )


def test_trials_under_mixed_float16_validate_with_the_ema_weights(digits_dir):
    import keras

    config = tiny_config(digits_dir, mixed_precision="mixed_float16")
    hypermodel = SASAHyperModel(config, SearchSpace(**SPACE))
    hp = hypermodel.hyperparameters()
    model = hypermodel.build(hp)
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    passed = {}
    model.fit = lambda *args, **kwargs: passed.update(kwargs)  # Only the arguments.
    hypermodel.fit(hp, model, epochs=1)
    # The non-finite check first (no later callback sees a diverged epoch), then the EMA swap.
    assert [type(c) for c in passed["callbacks"]] == [
        training.callbacks.StopOnNonFiniteLoss,
        keras.callbacks.SwapEMAWeights,
    ]


def test_a_random_search_keeps_no_trial_checkpoints(finished_search):
    import glob

    output_dir, results = finished_search
    trial_dirs = glob.glob(os.path.join(output_dir, "search", "trial_*"))
    assert len(trial_dirs) == 2
    assert all(os.path.exists(os.path.join(d, "trial.json")) for d in trial_dirs)
    assert glob.glob(os.path.join(output_dir, "search", "trial_*", "checkpoint*")) == []


@pytest.mark.parametrize("tuner", ["hyperband", "bayesian"])
def test_hyperband_and_bayesian_searches_run_and_rank_their_trials(tuner, digits_dir, tmp_path):
    results = tuning.search(
        tiny_config(digits_dir),
        SearchSpace(**{**SPACE, "base_width": 4, "num_heads": 1}),
        tuner=tuner,
        max_trials=2,
        epochs=2 if tuner == "hyperband" else 1,
        output_dir=str(tmp_path / tuner),
        log=lambda message: None,
    )
    scores = [trial["score"] for trial in results["trials"] if trial["status"] == "COMPLETED"]
    assert len(scores) >= 2
    assert all(0.0 <= score <= 1.0 for score in scores)
    assert results["best_score"] == max(scores)
    stored = json.load(open(tmp_path / tuner / tuning.RESULTS_FILE))
    assert stored["best_hyperparameters"] == results["best_hyperparameters"]


def test_the_search_spaces_default_stems_are_the_models_stems_by_downsampling():
    from keras_sasa.models import STEMS
    from keras_sasa.models import stem_reduction

    from keras_sasa.tuning import space

    assert space.SMALL_STEMS == tuple(s for s in STEMS if stem_reduction(s) == 1)
    assert space.LARGE_STEMS == tuple(s for s in STEMS if stem_reduction(s) > 1)
