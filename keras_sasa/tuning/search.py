"""Running a search: the tuner, resuming it, and its results.

`search(...)` is `python -m keras_sasa tune`: it makes a keras-tuner tuner (random search,
Hyperband or Bayesian optimisation) over a `SASAHyperModel`, runs it under a
`tf.distribute` strategy (the tuner's `distribution_strategy`), and writes
`tuning_results.json`. An output directory holds one search:

    search_settings.json   what the search explores (tuner, epochs, space, base config)
    search/                keras-tuner's project: its state and one directory per trial
                           (the trials' checkpoints only for Hyperband, which reads them)
    tuning_results.json    best_hyperparameters, best_score, and every trial's
                           hyperparameters, status and score

Started again in the same directory, a search continues: finished trials are kept,
a trial that was interrupted runs again, and new trials run until there are
`max_trials` (so raising `max_trials` extends a finished search). A directory holding a
search with other settings is refused (ValueError) unless `overwrite=True`.
"""

import json
import math
import os
import shutil

import keras_tuner

from keras_sasa import _validation as validation
from keras_sasa import distribute
from keras_sasa import training
from keras_sasa.training import run_files
from keras_sasa.tuning import space as space_module
from keras_sasa.tuning.hypermodel import SASAHyperModel

TUNERS = ("random", "hyperband", "bayesian")
OBJECTIVE = "val_accuracy"
RESULTS_FILE = "tuning_results.json"
SETTINGS_FILE = "search_settings.json"
PROJECT_NAME = "search"
# Hyperband's values that are not model hyperparameters: its schedule of epochs.
SCHEDULE_PREFIX = "tuner/"
# Short column names of the ranked table.
_COLUMNS = {
    "kernel_size": "k",
    "num_heads": "heads",
    "stem": "stem",
    "attention_stages": "attention",
    "stage_strides": "strides",
    "use_relative_position": "rel.pos",
    "base_width": "width",
    "learning_rate": "lr",
    "weight_decay": "wd",
    "label_smoothing": "ls",
}


def check_search_arguments(tuner, max_trials, epochs=None, hyperband_factor=3):
    """Raises ValueError (TypeError for wrong types) naming the bad argument."""
    if not isinstance(tuner, str):
        raise validation.error("tuner", tuner, "Expected a string", TypeError)
    validation.one_of("tuner", tuner, TUNERS)
    validation.positive_int("max_trials", max_trials)
    if epochs is not None:
        validation.positive_int("epochs", epochs)
    validation.integer("hyperband_factor", hyperband_factor)
    if hyperband_factor < 2:
        raise validation.error("hyperband_factor", hyperband_factor, "Expected at least 2")


def make_tuner(
    hypermodel,
    directory,
    tuner="random",
    max_trials=10,
    seed=0,
    overwrite=False,
    hyperband_factor=3,
):
    """A keras-tuner tuner over `hypermodel`, maximising the validation accuracy.

    Args:
        hypermodel: a `SASAHyperModel`; its strategy becomes the tuner's
            `distribution_strategy`, its configuration's epochs Hyperband's `max_epochs`.
        directory: where keras-tuner keeps its project (`directory/search`).
        tuner: `"random"` (`keras_tuner.RandomSearch`), `"hyperband"`
            (`keras_tuner.Hyperband`) or `"bayesian"` (`keras_tuner.BayesianOptimization`,
            which needs scipy and scikit-learn).
        max_trials: the number of trials (models trained). Hyperband stops earlier when
            its brackets are done; each of its rounds, a model continued for more
            epochs included, is a trial.
        seed: seed of the tuner's sampling.
        overwrite: start over, deleting the project; else an existing project is reloaded.
        hyperband_factor: Hyperband's reduction factor.

    Returns:
        A `keras_tuner.Tuner`.
    """
    check_search_arguments(tuner, max_trials, hyperband_factor=hyperband_factor)
    config, _, _, _ = hypermodel.prepare()
    common = dict(
        hypermodel=hypermodel,
        objective=keras_tuner.Objective(OBJECTIVE, direction="max"),
        # keras-tuner draws a random seed for a seed of 0.
        seed=seed + 1,
        directory=directory,
        project_name=PROJECT_NAME,
        overwrite=overwrite,
        distribution_strategy=hypermodel.strategy,
    )
    if tuner == "random":
        return _RandomSearch(max_trials=max_trials, **common)
    if tuner == "bayesian":
        return _BayesianOptimization(max_trials=max_trials, **common)
    result = keras_tuner.Hyperband(
        max_epochs=config.epochs, factor=hyperband_factor, hyperband_iterations=1, **common
    )
    # Hyperband has no trial budget of its own; its oracle honours one.
    result.oracle.max_trials = max_trials
    return result


class _WithoutCheckpoints:
    """A tuner that deletes a trial's checkpoint once the trial is recorded.

    keras-tuner keeps the weights and optimizer state of every trial's best epoch
    (`trial_*/checkpoint.weights.h5`: every weight three times, with its momentum and
    its EMA).
    Random search and Bayesian optimisation never read them again: resuming a search
    needs only the oracle's records (an interrupted trial is trained again from the
    start), and the best model is rebuilt from its hyperparameters
    (`SASAHyperModel.hyperparameters(best)`) and trained. Hyperband continues trials
    from their checkpoints, and keeps them.
    """

    def on_trial_end(self, trial):
        super().on_trial_end(trial)
        trial_dir = self.get_trial_dir(trial.trial_id)
        for name in os.listdir(trial_dir) if os.path.isdir(trial_dir) else ():
            if name.startswith("checkpoint"):
                os.remove(os.path.join(trial_dir, name))


class _RandomSearch(_WithoutCheckpoints, keras_tuner.RandomSearch):
    pass


class _BayesianOptimization(_WithoutCheckpoints, keras_tuner.BayesianOptimization):
    pass


def search(
    config=None,
    space=None,
    tuner="random",
    max_trials=10,
    epochs=None,
    output_dir=None,
    validation_split=0.2,
    strategy=None,
    overwrite=False,
    hyperband_factor=3,
    log=print,
):
    """Searches `space` for the best SASA-ResNet on `config`'s data; resumable.

    Args:
        config: the base `keras_sasa.training.TrainConfig` (data set, model, batch size,
            seed, ...). Defaults to `TrainConfig()`: digits, offline.
        space: a `SearchSpace`. Defaults to the paper's design space.
        tuner: `"random"`, `"hyperband"` or `"bayesian"`.
        max_trials: the number of trials; a search resumed in the same directory runs
            trials until there are this many.
        epochs: epochs of each trial (Hyperband's maximum); None: `config.epochs`, or
            the data's default.
        output_dir: the search's directory (see the module docstring); None:
            "runs/<dataset>_<model>_tuning".
        validation_split: share of the training split that scores the trials; None
            scores them on `config.test_split` (see `SASAHyperModel`).
        strategy: a `tf.distribute.Strategy`; None: `keras_sasa.distribute.get_strategy(
            config.strategy, config.tpu)`.
        overwrite: delete a previous search in `output_dir` and start over.
        hyperband_factor: Hyperband's reduction factor.
        log: called with each progress message.

    Returns:
        The results, as written to `output_dir/tuning_results.json` (see `results`).

    Raises:
        ValueError: a bad argument, configuration or space, or an output directory
            holding a search with other settings.
        TypeError: an argument of the wrong type.
        RuntimeError: keras-tuner gave up after consecutive failed trials.
    """
    check_search_arguments(tuner, max_trials, epochs, hyperband_factor)
    config = training.TrainConfig() if config is None else config
    if epochs is not None:
        config = config.replace(epochs=epochs)
    training.config.check(config)
    if output_dir is None:
        output_dir = default_output_dir(config)
    strategy = strategy or distribute.get_strategy(config.strategy, config.tpu)
    hypermodel = SASAHyperModel(config, space, validation_split, strategy)
    resolved, resolved_space, _, steps_per_epoch = hypermodel.prepare()
    # Made once the data, space and split are checked: a refused search leaves no folder.
    run_files.make_output_dir(output_dir)

    settings = {
        "tuner": tuner,
        "objective": OBJECTIVE,
        "epochs": resolved.epochs,
        "validation_split": validation_split,
        "hyperband_factor": hyperband_factor if tuner == "hyperband" else None,
        "space": resolved_space.to_dict(),
        "config": {
            k: v
            for k, v in resolved.run_fields().items()
            if k not in space_module.FIELDS and k != "epochs"
        },
    }
    settings_path = os.path.join(output_dir, SETTINGS_FILE)
    if overwrite:
        shutil.rmtree(os.path.join(output_dir, PROJECT_NAME), ignore_errors=True)
        for name in (SETTINGS_FILE, RESULTS_FILE):
            if os.path.exists(os.path.join(output_dir, name)):
                os.remove(os.path.join(output_dir, name))
    stored = run_files.read_json(settings_path)
    if stored is not None:
        _check_same_search(stored, settings, output_dir)
    elif os.path.exists(os.path.join(output_dir, PROJECT_NAME)):
        raise ValueError(
            f"The output directory {output_dir!r} holds a keras-tuner project without its "
            f"{SETTINGS_FILE}. Use another output directory, or pass overwrite=True "
            "(--overwrite) to start over."
        )
    run_files.write_json_atomically(settings_path, settings)

    keras_tuner_instance = make_tuner(
        hypermodel,
        output_dir,
        tuner,
        max_trials,
        seed=resolved.seed,
        hyperband_factor=hyperband_factor,
    )
    done = _finished_trials(keras_tuner_instance)
    log(
        f"{output_dir}: {tuner} search on {resolved.dataset}, {max_trials} trials of "
        f"{resolved.epochs} epochs ({steps_per_epoch} steps, batch {resolved.batch_size})"
        + (f"; {done} already finished." if done else ".")
    )
    verbose = 1 if resolved.verbose == "auto" else resolved.verbose
    keras_tuner_instance.search(verbose=verbose)
    collected = results(keras_tuner_instance, settings)
    run_files.write_json_atomically(os.path.join(output_dir, RESULTS_FILE), collected)
    return collected


def default_output_dir(config):
    """ "runs/<dataset>_<model>_tuning", beside the train command's "runs/<dataset>_<model>"."""
    return training.config.default_output_dir(config.dataset, config.model) + "_tuning"


def results(tuner, settings=None):
    """The results of a tuner's trials, as written to `tuning_results.json`.

    Returns:
        A dict: "objective", "direction", "best_score" (the best score of the
        completed trials), "best_trial_id", "best_hyperparameters", "trials" (every
        trial, in the order they started: "trial_id", "status", "score", "best_step",
        "hyperparameters" and, for Hyperband, "schedule" with its "tuner/..." values)
        and "settings".
    """
    oracle = tuner.oracle
    trials = []
    for trial_id in _start_order(oracle):
        trial = oracle.trials[trial_id]
        values = dict(trial.hyperparameters.values)
        schedule = {k: v for k, v in values.items() if k.startswith(SCHEDULE_PREFIX)}
        score = trial.score
        completed = trial.status == "COMPLETED"
        entry = {
            "trial_id": trial.trial_id,
            "status": trial.status,
            "score": float(score) if completed and score is not None else None,
            "best_step": trial.best_step if completed else None,
            "hyperparameters": {
                k: v for k, v in values.items() if not k.startswith(SCHEDULE_PREFIX)
            },
        }
        if schedule:
            entry["schedule"] = schedule
        trials.append(entry)
    scored = [t for t in trials if t["score"] is not None and math.isfinite(t["score"])]
    best = max(scored, key=lambda t: t["score"]) if scored else None
    return {
        "objective": OBJECTIVE,
        "direction": "max",
        "best_score": best["score"] if best else None,
        "best_trial_id": best["trial_id"] if best else None,
        "best_hyperparameters": dict(best["hyperparameters"]) if best else None,
        "trials": trials,
        "settings": settings,
    }


def format_table(results, limit=None):
    """The trials ranked by score (best first; unscored ones last) as a text table."""
    ranked = sorted(
        results["trials"],
        key=lambda t: (t["score"] is None, -(t["score"] or 0.0), t["trial_id"]),
    )
    if limit is not None:
        ranked = ranked[:limit]
    names = [n for n in space_module.FIELDS if any(n in t["hyperparameters"] for t in ranked)]
    header = ["rank", "trial", results["objective"], *(_COLUMNS[n] for n in names)]
    if any("schedule" in t for t in ranked):
        header.append("epochs")
    rows = []
    for rank, trial in enumerate(ranked, start=1):
        score = trial["score"]
        row = [
            str(rank),
            trial["trial_id"],
            f"{score:.4f}" if score is not None else trial["status"].lower(),
        ]
        row += [_format_value(trial["hyperparameters"].get(n)) for n in names]
        if "epochs" in header:
            schedule = trial.get("schedule", {})
            row.append(str(schedule.get("tuner/epochs", "")))
        rows.append(row)
    widths = [max(len(line[i]) for line in [header, *rows]) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.rjust(width) for cell, width in zip(line, widths, strict=True))
        for line in [header, *rows]
    )


def _format_value(value):
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def _start_order(oracle):
    order = [trial_id for trial_id in oracle.start_order if trial_id in oracle.trials]
    return order + sorted(set(oracle.trials) - set(order))


def _finished_trials(tuner):
    finished = ("COMPLETED", "FAILED", "INVALID")
    return sum(trial.status in finished for trial in tuner.oracle.trials.values())


def _check_same_search(stored, settings, output_dir):
    """Raises ValueError if `output_dir` holds a search with other settings."""
    differences = run_files.differences(stored, json.loads(json.dumps(settings)))
    if differences:
        raise ValueError(
            f"The output directory {output_dir!r} holds a search with other settings "
            f"({'; '.join(differences[:4])}). Use another output directory, or pass "
            "overwrite=True (--overwrite) to start over; only max_trials may change."
        )
