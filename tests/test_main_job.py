"""The main job: the small-image configuration, several seeds, a held-out validation split.

`python -m keras_sasa train --compare-baseline` on digits is the first thing a user runs;
these tests train it (or a slice of it) for real, on the offline digits.
"""

import json
import pytest

from keras_sasa import data
from keras_sasa import training
from keras_sasa.training import run as run_module
from keras_sasa.training import seeds as seeds_module

TINY = dict(base_width=4, num_heads=2, kernel_size=3)


def _fake_run(seed, accuracy, train_accuracy, rate, baseline=None):
    results = {
        "model": "sasa_resnet26",
        "dataset": "digits",
        "stem": "conv_small",
        "attention_stages": [1, 2, 3, 4],
        "params": 1000,
        "flops": 2e6,
        "epochs": 3,
        "test_split": "test",
        "test_accuracy": accuracy,
        "test_loss": 1.0 - accuracy,
        "train_split_accuracy": train_accuracy - 0.01,
        "final_train_accuracy": train_accuracy,
        "train_images_per_second": rate,
        "config": {"model": "sasa_resnet26", "seed": seed},
    }
    if baseline is not None:
        results["baseline"] = baseline
    return results


def test_seed_summary_is_the_mean_and_sample_standard_deviation():
    runs = [_fake_run(0, 0.90, 0.99, 100.0), _fake_run(1, 0.94, 1.0, 300.0)]
    summary = seeds_module.summarize(runs)
    assert summary["test_accuracy"]["mean"] == pytest.approx(0.92)
    # Sample standard deviation of (0.90, 0.94): 0.02 * sqrt(2).
    assert summary["test_accuracy"]["std"] == pytest.approx(0.028284271, rel=1e-6)
    assert summary["test_accuracy"]["values"] == [0.90, 0.94]
    assert summary["final_train_accuracy"]["mean"] == pytest.approx(0.995)
    assert summary["train_split_accuracy"]["values"] == pytest.approx([0.98, 0.99])
    assert summary["train_images_per_second"]["mean"] == pytest.approx(200.0)
    assert summary["params"] == 1000
    assert seeds_module.summarize(runs[:1])["test_accuracy"]["std"] == 0.0


def test_seed_table_shows_mean_and_std_of_both_models():
    baselines = [_fake_run(s, a, 1.0, 400.0) for s, a in ((0, 0.95), (1, 0.97))]
    runs = [
        _fake_run(0, 0.96, 0.99, 100.0, baselines[0]),
        _fake_run(1, 0.98, 1.0, 300.0, baselines[1]),
    ]
    results = {
        "seeds": [0, 1],
        "runs": runs,
        "summary": {
            "model": seeds_module.summarize(runs),
            "baseline": seeds_module.summarize(baselines),
        },
    }
    table = training.format_seed_results(results)
    assert "seeds 0, 1" in table
    assert "97.00 +- 1.41%" in table  # (96, 98)
    assert "96.00 +- 1.41%" in table  # (95, 97)
    assert "96.00 98.00" in table


@pytest.mark.parametrize("seeds", [(), (0, 0), ("0",), (True,)])
def test_bad_seeds_are_refused_naming_the_argument(seeds):
    with pytest.raises((ValueError, TypeError), match="`seeds`"):
        seeds_module.check_seeds(seeds)


def test_seeds_train_in_their_own_directories_and_are_summarised(digits_dir, tmp_path):
    config = training.TrainConfig(
        data_dir=digits_dir,
        output_dir=str(tmp_path),
        train_split="train[:128]",
        test_split="test[:64]",
        epochs=1,
        batch_size=64,
        verbose=0,
        # One attention layer: what is checked is the bookkeeping of the seeds.
        attention_stages=(4,),
        **TINY,
    )
    results = training.train_seeds(config, (3, 5), log=lambda message: None)
    for seed in (3, 5):
        seed_results = json.load(open(tmp_path / f"seed_{seed}" / "results.json"))
        assert seed_results["config"]["seed"] == seed
    stored = json.load(open(tmp_path / "results.json"))
    assert stored["seeds"] == [3, 5]
    accuracies = [run["test_accuracy"] for run in results["runs"]]
    assert stored["summary"]["model"]["test_accuracy"]["values"] == accuracies
    assert stored["summary"]["model"]["test_accuracy"]["mean"] == pytest.approx(sum(accuracies) / 2)
    # Started again, every seed is finished: the same summary, nothing trained.
    again = training.train_seeds(config, (3, 5), log=lambda message: None)
    assert again["summary"] == results["summary"]


def test_validation_split_holds_out_the_end_of_the_training_split(digits_dir, tmp_path):
    config = training.TrainConfig(
        data_dir=digits_dir,
        output_dir=str(tmp_path),
        epochs=1,
        batch_size=64,
        validation_split=0.25,
        verbose=0,
        **TINY,
    )
    info = data.dataset_info("digits", data_dir=digits_dir)
    resolved = training.resolve(config, info)
    train_data, test_data, steps = training.make_datasets(resolved, info)
    validation = run_module.make_validation_dataset(resolved, info)
    # 1,437 training images: 75% (1,078) train in 16 full batches of 64; 25% (359) validate.
    assert steps == 1078 // 64
    assert sum(int(images.shape[0]) for images, _ in validation) == 359
    # The training split's accuracy is measured on the 1,078 images trained on.
    fit_check = run_module.make_training_evaluation_dataset(resolved, info)
    assert sum(int(images.shape[0]) for images, _ in fit_check) == 1078
    assert sum(int(images.shape[0]) for images, _ in test_data) == 360


def test_small_image_defaults_learn_digits_in_a_few_epochs(digits_dir, tmp_path):
    # The main job's model and recipe (conv stem, attention in every group, strides
    # 1,1,2,2), 4 of its 30 epochs: it must already classify most of the test digits
    # (chance: 10%; 91% with seed 0 on 2026-11-30).
    config = training.TrainConfig(
        data_dir=digits_dir, output_dir=str(tmp_path), epochs=4, verbose=0
    )
    results = training.train(config, log=lambda message: None)
    assert results["stem"] == "conv_small" and results["attention_stages"] == [1, 2, 3, 4]
    assert results["test_accuracy"] >= 0.8, results["test_accuracy"]
