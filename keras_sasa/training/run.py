"""Training runs: data, model, `fit`, results, and resuming after an interruption.

`train(config)` trains the model of a `TrainConfig` (and, with `compare_baseline`, the
convolutional baseline of the same depth) and returns its results. The pieces it is made
of, `make_datasets`, `build_model` and `compile_model`, are public so that other drivers
(a keras-tuner `HyperModel`, a notebook) train with the same pipelines and recipe.

A run directory (`output_dir`; the baseline's is `output_dir/baseline`) holds::

    config.json       the resolved configuration (a resumed run must match it)
    history.csv       one row per finished epoch: epoch, loss, accuracy, val_*,
                      learning_rate, epoch_seconds, images_per_second
    logs/             TensorBoard event files (train/, validation/)
    checkpoints/      latest.weights.h5, replaced atomically after every epoch: the model and
                      optimizer state (the weights being trained, their EMA in the
                      optimizer), for `model.load_weights` on a compiled model
    backup/           the BackupAndRestore state (weights that record their epoch, and
                      metadata giving it), removed once the run is finished
    model.keras       the final model (EMA weights when `ema`), saved after training
    results.json      written last: params, FLOPs, test accuracy and loss, images/s, the
                      training steps that loss scaling skipped, model.keras's SHA-256
    diverged/         the files above of a run whose loss became NaN or infinite: the
                      run stopped at the end of that epoch, said so, and wrote no results;
                      the next run in the directory starts over

Every file is replaced whole (written to `.partial-<pid>-<name>`, then renamed): a kill
leaves the previous file or the new one, and the next start of the run removes the
temporary files a killed process left.

Starting a run again with the same configuration continues it from its last finished
epoch (or, if it was killed after training but before `results.json`, only evaluates
and saves), with one history.csv row per epoch (where an epoch has several rows, the
last is kept). A run whose `results.json` exists is finished: starting it
again reports the stored results and trains nothing, once its model.keras is found to
be the file it saved.

A resume never silently differs from the uninterrupted run: a run directory that cannot
be resumed exactly is refused before anything is trained, with one message naming the
file and what to delete. That is the case for:

- a damaged backup (`callbacks.check_backup`): weights or metadata missing, truncated
  or unreadable; an epoch outside the run; weights recording another epoch than the
  metadata, or none (another run's); epochs without a whole history.csv row of
  numbers, or a history.csv without the columns above;
- backup weights that do not fit the model (`callbacks.load_backup_weights`);
- a history.csv that is not CSV text, when resuming (from epoch 0 it is replaced);
- a config.json or results.json that is not what this package writes (not JSON, a list,
  `{}`, without the configuration), reported as damaged, not as another configuration;
- a finished run whose model.keras is missing or not the file it saved.

The one inconsistent state a kill can leave, backup weights one epoch ahead of their
metadata (killed between the two renames), is repaired, and said so.
"""

import math
import os
import shutil
import sys
import zipfile

import keras
import numpy as np
import tensorflow as tf

from keras_sasa import data
from keras_sasa import distribute
from keras_sasa.models import MODELS
from keras_sasa.models import count_flops
from keras_sasa.training import callbacks as run_callbacks
from keras_sasa.training import config as run_config
from keras_sasa.training import recipe
from keras_sasa.training import report
from keras_sasa.training import run_files

CONFIG_FILE = "config.json"
RESULTS_FILE = "results.json"
HISTORY_FILE = "history.csv"
# Columns of every run's history.csv (the results are made of them): fit's loss and
# accuracy, and EpochStats' numbers.
HISTORY_COLUMNS = (
    "epoch",
    "loss",
    "accuracy",
    "learning_rate",
    "epoch_seconds",
    "images_per_second",
)
MODEL_FILE = "model.keras"
LOG_DIR = "logs"
CHECKPOINT_DIR = "checkpoints"
# One file, replaced each epoch: a file per epoch would take 200 MB for the digits
# defaults alone.
CHECKPOINT_FILE = "latest.weights.h5"
BACKUP_DIR = "backup"
BASELINE_DIR = "baseline"
# Where the files of a run whose loss became NaN or infinite go (see `train_run`).
DIVERGED_DIR = "diverged"


def train(config, strategy=None, log=print):
    """Trains `config`'s model and, with `config.compare_baseline`, its conv baseline.

    Args:
        config: a `TrainConfig`.
        strategy: a `tf.distribute.Strategy`; None: `keras_sasa.distribute.get_strategy(
            config.strategy, config.tpu)`.
        log: called with each progress message (Keras' own progress goes to stdout).

    Returns:
        The results (as written to `results.json`): "model", "dataset", "params",
        "flops", "epochs", "test_accuracy", "test_loss", "train_images_per_second", ...,
        "config", and under "baseline" the baseline's results when compared.

    Raises:
        ValueError: a bad configuration, unknown data set or model, images the model
            cannot take, or an output directory holding a run of another configuration.
        OSError: the output directory cannot be written.
    """
    run_config.check(config)
    # Checks the data set's name before anything is written or started.
    data.dataset_info(config.dataset, data_dir=config.data_dir)
    output_dir = config.output_dir or run_config.default_output_dir(config.dataset, config.model)
    created = not os.path.exists(output_dir)
    run_files.make_output_dir(output_dir)
    try:
        return _train(config, strategy, output_dir, log)
    except ValueError:
        if created:  # A refused run leaves no empty directory behind.
            run_files.remove_empty_dirs(output_dir)
        raise


def _train(config, strategy, output_dir, log):
    strategy = strategy or distribute.get_strategy(config.strategy, config.tpu)
    if config.mixed_precision == "mixed_float16" and not distribute.has_fast_float16():
        log(
            "Warning: mixed_float16 is slower than float32 here: no device of this machine "
            "computes fast in float16 (GPUs of CUDA compute capability 7.0 or later do)."
        )
    info = data.dataset_info(config.dataset, data_dir=config.data_dir, download=True)
    config = run_config.resolve(config.replace(output_dir=output_dir), info)
    # With the defaults chosen: refused here, before anything is built or trained.
    run_config.check_model(config)

    results = train_run(config, info, strategy, output_dir, log)
    if config.compare_baseline:
        baseline_dir = os.path.join(output_dir, BASELINE_DIR)
        baseline = train_run(run_config.baseline(config), info, strategy, baseline_dir, log)
        results = {**results, "baseline": baseline}
        if distribute.is_chief(strategy):
            run_files.write_json_atomically(os.path.join(output_dir, RESULTS_FILE), results)
    return results


def make_datasets(config, info, strategy=None, initial_epoch=None):
    """The training and evaluation pipelines of a resolved config, with one-hot labels.

    With `config.validation_split`, training uses the training split without its held-out
    share (see `make_validation_dataset`).

    Args:
        initial_epoch: None: the training pipeline is one epoch, reshuffled at each pass.
            An integer (with `config.seed` set): the epochs from that one to the last,
            one after the other, each a function of (seed, epoch) only, so that a resumed
            run reads what the uninterrupted one did (`data.load_dataset(initial_epoch=
            ...)`); give `fit` the `steps_per_epoch`.

    Returns:
        `(train, test, steps_per_epoch)`: `tf.data.Dataset`s of `(images, one_hot_labels)`
        batched with the global batch size (training drops the last partial batch), and
        the training steps of one epoch.

    Raises:
        ValueError: the training split has fewer images than one batch, or the batch
            does not split evenly over the strategy's replicas.
    """
    distribute.per_replica_batch_size(config.batch_size, strategy)
    train_split = training_split(config)
    train_data = _load(config, info, train_split, training=True)
    test_data = _load(config, info, config.test_split, training=False)
    steps_per_epoch = int(train_data.cardinality())
    if steps_per_epoch == 0:
        raise ValueError(
            f"The training split {train_split!r} of {config.dataset!r} has fewer images "
            f"than one batch of {config.batch_size}."
        )
    if steps_per_epoch < 0:
        raise ValueError(
            f"Cannot count the batches of the training split {train_split!r} of {config.dataset!r}."
        )
    if initial_epoch is not None:
        train_data = _load(config, info, train_split, training=True, initial_epoch=initial_epoch)
    return train_data, test_data, steps_per_epoch


def training_split(config):
    """The split a resolved config trains on: its training split without the share that
    `config.validation_split` holds out."""
    if config.validation_split is None:
        return config.train_split
    return run_config.held_out_splits(config.train_split, config.validation_split)[0]


def make_training_evaluation_dataset(config, info):
    """The training split as it was trained on (`training_split`), but read like the test
    split: in order, unaugmented. Evaluating on it tells how well the model fits it."""
    return _load(config, info, training_split(config), training=False)


def make_validation_dataset(config, info):
    """The pipeline of the share of the training split that `config.validation_split`
    holds out (unaugmented, like the test pipeline), or None without one."""
    if config.validation_split is None:
        return None
    _, held_out = run_config.held_out_splits(config.train_split, config.validation_split)
    return _load(config, info, held_out, training=False)


def _load(config, info, split, training, initial_epoch=None):
    dataset = data.load_dataset(
        config.dataset,
        split,
        config.batch_size,
        data_dir=config.data_dir,
        image_size=_pipeline_image_size(config, info),
        training=training,
        seed=config.seed,
        initial_epoch=initial_epoch,
        epochs=None if initial_epoch is None else config.epochs,
    )
    return dataset.map(
        lambda images, labels: (images, tf.one_hot(labels, info.num_classes)),
        num_parallel_calls=tf.data.AUTOTUNE,
    )


def first_images(config, info):
    """The first batch of training images, unaugmented, read without filling any cache."""
    dataset = data.load_dataset(
        config.dataset,
        config.train_split,
        config.batch_size,
        data_dir=config.data_dir,
        image_size=_pipeline_image_size(config, info),
        cache=False,
    )
    images, _ = next(iter(dataset.take(1)))
    return images


def build_model(config, info):
    """The resolved config's model for the data set: `MODELS[config.model](...)`, with
    `config.batch_norm_momentum` (if set) on its batch norm layers.

    Raises:
        ValueError: from the builder, e.g. images too small for the stem and groups.
    """
    channels = info.image_shape[2]
    conv_only = not config.attention_stages and config.stem.startswith("conv")
    model = MODELS[config.model](
        input_shape=(config.image_size, config.image_size, channels),
        classes=info.num_classes,
        name=f"{config.model}_conv_baseline" if conv_only else config.model,
        stem=config.stem,
        attention_stages=config.attention_stages,
        stackwise_strides=config.stage_strides,
        kernel_size=config.kernel_size,
        num_heads=config.num_heads,
        base_width=config.base_width,
        use_relative_position=config.use_relative_position,
    )
    if config.batch_norm_momentum is not None:
        recipe.set_batch_norm_momentum(model, config.batch_norm_momentum)
    return model


def compile_model(model, config, steps_per_epoch, strategy=None):
    """Compiles `model` with the paper's recipe (see `keras_sasa.training.recipe`).

    Call it inside `strategy.scope()`, where the model was built. `config` must be
    resolved, with `ema_momentum` set when `config.ema` (see `with_run_length`).
    """
    total_steps = recipe.steps(config.epochs, steps_per_epoch)
    warmup_steps = min(recipe.warmup_steps(config.warmup_epochs, steps_per_epoch), total_steps - 1)
    schedule = recipe.learning_rate_schedule(config.learning_rate, total_steps, warmup_steps)
    optimizer = recipe.make_optimizer(
        schedule,
        momentum=config.momentum,
        weight_decay=config.weight_decay,
        ema_momentum=config.ema_momentum if config.ema else None,
    )
    jit_compile, steps_per_execution = distribute.fit_options(
        strategy, config.jit_compile, config.steps_per_execution
    )
    model.compile(
        optimizer=optimizer,
        loss=recipe.make_loss(config.label_smoothing),
        metrics=recipe.make_metrics(model.output_shape[-1]),
        jit_compile=jit_compile,
        steps_per_execution=steps_per_execution,
    )
    # Outside a distribution strategy Keras builds the optimizer (momenta, EMA averages)
    # inside the first traced train step, and TensorFlow then traces the step a second
    # time without the variable creation. Building it here, eagerly, cuts the first `fit`
    # of a small SASA-ResNet-26 from 26 to 20 s, and from 77 to 52 s with XLA
    # (docs/design.md).
    model.optimizer.build(model.trainable_variables)
    return model


def with_run_length(config, steps_per_epoch):
    """`config` with the momenta that depend on the run's length filled in:
    `ema_momentum` (None without EMA) and `batch_norm_momentum`, by
    `recipe.default_ema_momentum` and `recipe.default_batch_norm_momentum`."""
    total_steps = recipe.steps(config.epochs, steps_per_epoch)
    ema_momentum = None
    if config.ema:
        ema_momentum = config.ema_momentum
        if ema_momentum is None:
            ema_momentum = recipe.default_ema_momentum(total_steps)
    batch_norm_momentum = config.batch_norm_momentum
    if batch_norm_momentum is None:
        batch_norm_momentum = recipe.default_batch_norm_momentum(total_steps)
    return config.replace(ema_momentum=ema_momentum, batch_norm_momentum=batch_norm_momentum)


def train_run(config, info, strategy, run_dir, log=print):
    """Trains one model of a resolved config in `run_dir`; resumes or reports a finished run.

    Returns:
        The run's results (the content of its `results.json`).

    Raises:
        ValueError: among others, the loss became NaN or infinite. The message names the
            epoch and the learning rate; the run's files are moved to `run_dir/diverged`,
            so that the next run in `run_dir`, with a smaller learning rate, starts over.
    """
    try:
        return _train_run(config, info, strategy, run_dir, log)
    except run_callbacks.NonFiniteLoss as error:
        raise _set_aside_diverged_run(error, config, run_dir, strategy) from None


def _train_run(config, info, strategy, run_dir, log):
    run_files.remove_leftovers(run_dir)
    finished = _finished_results(config, run_dir)
    if finished is not None:
        log(
            f"{run_dir}: already trained ({finished['epochs']} epochs, test accuracy "
            f"{finished['test_accuracy']:.4f}); reporting its {RESULTS_FILE}. Delete the "
            "directory or choose another output directory to train again."
        )
        return finished

    run_files.make_output_dir(run_dir)
    train_data, test_data, steps_per_epoch = make_datasets(config, info, strategy)
    config = with_run_length(config, steps_per_epoch)
    config_path = os.path.join(run_dir, CONFIG_FILE)
    stored = run_files.read_json_object(config_path, _CONFIG_KEYS, "start the run over")
    if stored is not None:
        _check_same_run(stored, config, run_dir)
    chief = distribute.is_chief(strategy)
    out_dir = run_dir if chief else distribute.worker_dir(run_dir, strategy)
    backup_dir = distribute.worker_dir(os.path.join(run_dir, BACKUP_DIR), strategy)
    for directory in (out_dir, os.path.join(out_dir, CHECKPOINT_DIR), backup_dir):
        run_files.remove_leftovers(directory)
    # A damaged backup is refused before anything is written or trained.
    history_path = os.path.join(out_dir, HISTORY_FILE)
    start_epoch = run_callbacks.check_backup(
        backup_dir, config.epochs, history_path, run_dir, log, HISTORY_COLUMNS
    )
    # As EpochCSVLogger does when fit starts, but also for a run whose epochs are all
    # finished (fit trains none): the results are made of these rows.
    run_callbacks.keep_rows_before(history_path, start_epoch)
    if config.seed is not None and start_epoch < config.epochs:
        # Epoch e's data depends on (seed, e) only: resumed at e, the run reads what the
        # uninterrupted run read (a reshuffled pipeline would start again from epoch 0's).
        # tf.data pairs an op's seed with the global seed: set it, so that the data do
        # not depend on what ran before in this process.
        keras.utils.set_random_seed(config.seed)
        train_data, _, _ = make_datasets(config, info, strategy, initial_epoch=start_epoch)

    with distribute.dtype_policy(config.mixed_precision):
        keras.utils.set_random_seed(config.seed)
        with strategy.scope():
            model = build_model(config, info)
            compile_model(model, config, steps_per_epoch, strategy)
        # Written once the model is built: a configuration the builder refuses (an even
        # kernel size, images too small) leaves no config.json to refuse the next run.
        if chief:
            run_files.write_json_atomically(config_path, config.to_dict())
        if distribute.single_device(strategy):
            # Restoring a backup (in fit) replaces these statistics.
            recipe.initialize_batch_norm_statistics(model, first_images(config, info))
        params = int(sum(np.prod(w.shape) for w in model.trainable_weights))
        flops = count_flops(model)

        if start_epoch:
            with strategy.scope():
                run_callbacks.load_backup_weights(model, backup_dir, run_dir)
            log(
                f"{run_dir}: resuming after epoch {start_epoch} of {config.epochs} "
                f"(from {backup_dir})."
            )
        else:
            log(
                f"{run_dir}: training {model.name} ({params:,} parameters, "
                f"{flops / 1e6:,.1f} MFLOPs per image) on {config.dataset} for {config.epochs} "
                f"epochs of {steps_per_epoch} steps, batch {config.batch_size}."
            )
        validation_data = make_validation_dataset(config, info)
        model.fit(
            train_data,
            epochs=config.epochs,
            steps_per_epoch=steps_per_epoch,
            validation_data=test_data if validation_data is None else validation_data,
            callbacks=_fit_callbacks(model, config, steps_per_epoch, out_dir, backup_dir),
            verbose=fit_verbosity(config.verbose),
            shuffle=False,  # The pipeline shuffles.
        )
        skipped = recipe.check_steps_taken(model.optimizer, config, steps_per_epoch, run_dir, log)
        # fit has put the EMA weights in the model (optimizer.finalize_variable_values).
        recipe.separate_variable_buffers(model.optimizer)
        test = model.evaluate(test_data, return_dict=True, verbose=0)
        if not math.isfinite(test["loss"]):  # The last epoch's weights, after its last step.
            raise run_callbacks.NonFiniteLoss(config.epochs - 1, "test_loss", test["loss"])
        train = model.evaluate(
            make_training_evaluation_dataset(config, info), return_dict=True, verbose=0
        )
        model_path = os.path.join(out_dir, MODEL_FILE)
        run_files.replace_atomically(model_path, model.save)

    history = run_files.read_history(history_path)
    results = report.run_results(config, params, flops, test, history, steps_per_epoch, train)
    results["skipped_steps"] = skipped
    results["model_sha256"] = run_files.file_sha256(model_path)
    if chief:
        run_files.write_json_atomically(os.path.join(run_dir, RESULTS_FILE), results)
    # Removed only now: a kill before results.json restarts from the backup, not epoch 0.
    shutil.rmtree(backup_dir, ignore_errors=True)
    return results


def _fit_callbacks(model, config, steps_per_epoch, out_dir, backup_dir):
    # Order matters at the end of an epoch: the timer adds its numbers to the logs
    # before they are written; the history row is written before the backup; the
    # backup copies the weights file the checkpoint has just written.
    checkpoint = run_callbacks.AtomicWeightsCheckpoint(
        os.path.join(out_dir, CHECKPOINT_DIR, CHECKPOINT_FILE)
    )
    return [
        run_callbacks.StopOnNonFiniteLoss(),  # First: no other callback keeps such an epoch.
        run_callbacks.EpochStats(steps_per_epoch * config.batch_size),
        *recipe.ema_callbacks(model.optimizer),
        keras.callbacks.TensorBoard(os.path.join(out_dir, LOG_DIR), write_graph=False),
        run_callbacks.EpochCSVLogger(os.path.join(out_dir, HISTORY_FILE)),
        checkpoint,
        run_callbacks.AtomicBackupAndRestore(
            backup_dir, weights_from=checkpoint, delete_checkpoint=False
        ),
    ]


def _set_aside_diverged_run(error, config, run_dir, strategy):
    """Moves the files of a run whose loss became NaN or infinite to `run_dir/diverged`
    (replacing an older one), and returns the ValueError that says so and what to do."""
    diverged_dir = os.path.join(run_dir, DIVERGED_DIR)
    if distribute.is_chief(strategy):
        shutil.rmtree(diverged_dir, ignore_errors=True)
        os.makedirs(diverged_dir)
        for name in (CONFIG_FILE, HISTORY_FILE, LOG_DIR, CHECKPOINT_DIR, BACKUP_DIR):
            if os.path.exists(os.path.join(run_dir, name)):
                os.replace(os.path.join(run_dir, name), os.path.join(diverged_dir, name))
    loss = {"loss": "training loss", "val_loss": "validation loss"}.get(error.name, "test loss")
    learning_rate, weight_decay = config.learning_rate, config.weight_decay
    if learning_rate * weight_decay >= 1:
        # Decoupled weight decay multiplies the weights by 1 - learning_rate * weight_decay
        # at every step: at or below 0, they flip sign (and grow, below -1).
        cause = (
            f"The weight decay, {weight_decay:g}, is the most likely cause: each step "
            f"multiplies the weights by 1 - learning rate x weight decay = "
            f"{1 - learning_rate * weight_decay:g}; train again with a --weight-decay well "
            f"under 1 / learning rate = {1 / learning_rate:g}"
        )
    else:
        default = recipe.scaled_learning_rate(config.batch_size)
        cause = (
            f"The learning rate, {learning_rate:g}, is the most likely cause: train again "
            f"with a smaller --learning-rate (the default for a batch of {config.batch_size} "
            f"is {default:g})"
        )
    return ValueError(
        f"{run_dir}: the {loss} became {error.value} in epoch {error.epoch + 1} of "
        f"{config.epochs}. {cause}. The run's files were moved to {diverged_dir}; the next "
        f"run in {run_dir} starts over."
    )


def fit_verbosity(verbose):
    """`Model.fit`'s verbosity for a config's `verbose`: "auto" is progress bars on a
    terminal, one line per epoch otherwise."""
    if verbose == "auto":
        return 1 if sys.stdout.isatty() else 2
    return verbose


def _pipeline_image_size(config, info):
    """`image_size` for `load_dataset`: None (no resizing) at the native size."""
    native = info.image_shape[0] if info.image_shape[0] == info.image_shape[1] else None
    return None if config.image_size == native else config.image_size


# Keys a run's config.json (and the "config" of its results.json) cannot be without.
_CONFIG_KEYS = ("dataset", "model", "epochs")


def _finished_results(config, run_dir):
    """The results of the finished run of `config` in `run_dir`, or None if it has none.

    Raises:
        ValueError: `run_dir` holds a run of another configuration, or its results.json
            or model.keras is damaged.
    """
    path = os.path.join(run_dir, RESULTS_FILE)
    start_over = "train the run again"
    finished = run_files.read_json_object(
        path, ("config", "model", "dataset", "epochs", "test_accuracy"), start_over
    )
    if finished is None:
        return None
    stored = finished["config"]
    if not isinstance(stored, dict) or any(key not in stored for key in _CONFIG_KEYS):
        raise run_files.damaged(path, "its 'config' is not a run's configuration", start_over)
    if not isinstance(finished["test_accuracy"], (int, float)):
        raise run_files.damaged(path, "its 'test_accuracy' is not a number", start_over)
    _check_same_run(stored, config, run_dir)
    model_path = os.path.join(run_dir, MODEL_FILE)
    problem = _model_file_problem(model_path, finished.get("model_sha256"))
    if problem:
        raise ValueError(
            f"{run_dir} holds a finished run ({RESULTS_FILE}) whose model file {model_path} "
            f"{problem}. Delete {path} (or the directory) to train the run again."
        )
    return finished


def _model_file_problem(path, sha256):
    """What is wrong with a finished run's model file, or None.

    Its SHA-256 must be the one recorded in results.json when it was saved; results
    written before the checksum was recorded are checked as zip archives (the .keras
    format), whose members each carry a CRC.
    """
    if not os.path.isfile(path):
        return "is missing"
    if sha256 is not None:
        if run_files.file_sha256(path) != sha256:
            return f"is damaged (not the file saved: its SHA-256 is not {RESULTS_FILE}'s)"
        return None
    try:
        with zipfile.ZipFile(path) as archive:
            if archive.testzip() is None:
                return None
    except (zipfile.BadZipFile, OSError, EOFError):
        pass
    return "is damaged (not a whole .keras archive)"


def _check_same_run(stored, config, run_dir):
    """Raises ValueError if `run_dir` holds a run of another configuration."""
    # Fields still None here (ema_momentum before the steps are counted) are not compared.
    ours = {k: v for k, v in config.run_fields().items() if v is not None}
    # A field missing from a stored config was added to TrainConfig later: that run had
    # the field's default.
    defaults = run_config.TrainConfig().to_dict()
    theirs = {k: stored.get(k, defaults.get(k)) for k in ours}
    differences = run_files.differences(theirs, ours)
    if differences:
        raise ValueError(
            f"The output directory {run_dir!r} holds a run with another configuration "
            f"({'; '.join(differences[:4])}). Use another output directory, or delete this "
            "one to start over."
        )
