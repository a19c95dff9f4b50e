"""Training once per seed, and the mean and spread of the results over the seeds."""

import os
import statistics

from keras_sasa import _validation as check
from keras_sasa.training import config as run_config
from keras_sasa.training import run_files
from keras_sasa.training.run import RESULTS_FILE
from keras_sasa.training.run import train


def train_seeds(config, seeds, strategy=None, log=print):
    """Trains `config` once per seed, each in `output_dir/seed_<seed>`, and summarises.

    Each seed's run is an ordinary `train` run (resumable, or reported if finished). The
    summary, written to `output_dir/results.json`, holds every seed's results and, per
    model ("model", and "baseline" with `compare_baseline`), the mean and the sample
    standard deviation over the seeds of the test accuracy, test loss, final training
    accuracy and training images/s.

    Args:
        config: a `TrainConfig`; its `seed` is replaced by each of `seeds`.
        seeds: distinct integers.
        strategy, log: as in `train`.

    Returns:
        The summary (as written to `results.json`): "seeds", "runs" (each seed's
        results), "summary".
    """
    seeds = check_seeds(seeds)
    run_config.check(config)
    output_dir = config.output_dir or run_config.default_output_dir(config.dataset, config.model)
    runs = []
    for seed in seeds:
        seed_dir = os.path.join(output_dir, f"seed_{seed}")
        runs.append(train(config.replace(seed=seed, output_dir=seed_dir), strategy, log))
    summary = {"model": summarize(runs)}
    if config.compare_baseline:
        summary["baseline"] = summarize([run["baseline"] for run in runs])
    results = {"seeds": list(seeds), "summary": summary, "runs": runs}
    run_files.write_json_atomically(os.path.join(output_dir, RESULTS_FILE), results)
    return results


# The numbers `summarize` aggregates over seeds.
SEED_METRICS = (
    "test_accuracy",
    "test_loss",
    "train_split_accuracy",
    "final_train_accuracy",
    "train_images_per_second",
)


def summarize(runs):
    """Mean, sample standard deviation (0 for one run) and values of `SEED_METRICS` over
    the results of `runs` (one model, several seeds); also its params and FLOPs."""
    first = runs[0]
    summary = {
        "name": first["config"]["model"],
        **{key: first[key] for key in ("params", "flops", "stem", "attention_stages")},
    }
    for metric in SEED_METRICS:
        values = [run.get(metric) for run in runs]
        if any(value is None for value in values):
            continue
        summary[metric] = {
            "mean": statistics.fmean(values),
            "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "values": values,
        }
    return summary


def check_seeds(seeds):
    """`seeds` as a tuple of distinct ints; ValueError / TypeError naming `seeds`."""
    try:
        seeds = tuple(seeds)
    except TypeError:
        raise check.error("seeds", seeds, "Expected integers", TypeError) from None
    if not seeds or any(not check.is_int(s) for s in seeds):
        raise check.error("seeds", seeds, "Expected one or more integers")
    if len(set(seeds)) != len(seeds):
        raise check.error("seeds", seeds, "Expected each seed once")
    return seeds
