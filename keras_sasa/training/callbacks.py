"""Callbacks that make a run resumable after a kill at any moment, and time its epochs.

Keras' `BackupAndRestore` and `CSVLogger(append=True)` almost do it; what they miss:

- `BackupAndRestore` writes its weights file and then its metadata file in place. A kill
  during the weights leaves a truncated HDF5 file; a kill during the metadata leaves an
  empty JSON file, and every later start fails on it. `AtomicBackupAndRestore` writes both
  to temporary files and renames them into place.
- `CSVLogger(append=True)` appends one row per epoch and never removes one. Whatever its
  place among the callbacks, a kill between its row and the backup of the same epoch
  either loses the row (backup first) or writes it twice (row first: the epoch is
  trained again after the restart). `EpochCSVLogger` runs before the backup and, when
  training (re)starts at epoch e, first drops the rows of epochs >= e (and a half-written
  last line), so each finished epoch has exactly one row.
"""

import functools
import json
import math
import os
import shutil
import time

import keras

from keras_sasa.training.run_files import read_history
from keras_sasa.training.run_files import replace_atomically
from keras_sasa.training.run_files import write_json_atomically


class AtomicBackupAndRestore(keras.callbacks.BackupAndRestore):
    """`keras.callbacks.BackupAndRestore` whose backup files are replaced atomically.

    The weights (with the optimizer's state: momentum, EMA, step count) are written first,
    then the metadata (the epoch to restart at); each goes to a temporary file that is
    renamed into place. A kill while writing leaves the previous backup whole. A kill in
    the microseconds between the two renames leaves the new weights with the previous
    epoch number: that epoch is then trained once more (history.csv stays exact, see
    `EpochCSVLogger`).

    Only `_save_model`, which Keras calls at the end of each epoch, is replaced; restoring
    is Keras' own.

    Args:
        backup_dir: as for `BackupAndRestore`.
        weights_from: an `AtomicWeightsCheckpoint` placed before this callback. The
            weights file it wrote at the end of the same epoch is copied instead of
            written again (`save_weights` takes about half a second for a small
            SASA-ResNet-26 and its optimizer state: as long as an epoch on digits).
        **kwargs: for `BackupAndRestore`.
    """

    def __init__(self, backup_dir, weights_from=None, **kwargs):
        super().__init__(backup_dir, **kwargs)
        self.weights_from = weights_from

    def _save_model(self):
        os.makedirs(self.backup_dir, exist_ok=True)
        source = self.weights_from
        # Keras has set _current_epoch to the epoch that just ended, plus one.
        if source is not None and source.last_saved_epoch == self._current_epoch - 1:
            write = functools.partial(shutil.copyfile, source.filepath)
        else:
            write = functools.partial(self.model.save_weights, overwrite=True)
        replace_atomically(self._weights_path, write)
        metadata = {"epoch": self._current_epoch, "batch": self._last_batch_seen}
        write_json_atomically(self._training_metadata_path, metadata)


BACKUP_WEIGHTS_FILE = "latest.weights.h5"  # BackupAndRestore's file names
BACKUP_METADATA_FILE = "training_metadata.json"


def _damaged(run_dir, backup_dir, path, problem):
    return ValueError(
        f"Cannot resume the run in {run_dir}: {path} {problem}. Delete {backup_dir} to "
        f"train the run again from its first epoch, or delete {run_dir} to start over."
    )


def check_backup(backup_dir, epochs, history_path, run_dir):
    """The epoch a run restarts at from its `BackupAndRestore` state (0 without one),
    once the backup is found whole and consistent.

    `BackupAndRestore` would restore a damaged backup with a raw error naming no file
    (truncated weights, empty metadata), or silently train from scratch under the epoch
    numbers of the metadata (weights deleted), or train nothing and report the
    untrained model (an epoch beyond the run's). The backup's weights and metadata must
    both be there, the metadata must give an epoch in 1..`epochs`, and `history_path`
    must hold a row for every epoch the backup says is finished. Whether the weights
    load is checked by `load_backup_weights`, once the model is built.

    Raises:
        ValueError: naming the damaged file and the directory to delete.
    """
    weights = os.path.join(backup_dir, BACKUP_WEIGHTS_FILE)
    metadata = os.path.join(backup_dir, BACKUP_METADATA_FILE)
    has_weights, has_metadata = os.path.isfile(weights), os.path.isfile(metadata)
    if not has_weights and not has_metadata:
        return 0
    if not has_weights:
        raise _damaged(run_dir, backup_dir, weights, f"is missing (its {metadata} is there)")
    if not has_metadata:
        raise _damaged(run_dir, backup_dir, metadata, f"is missing (its {weights} is there)")
    try:
        with open(metadata) as f:
            epoch = json.load(f)["epoch"]
    except (ValueError, KeyError, TypeError, IndexError):
        raise _damaged(
            run_dir, backup_dir, metadata, 'is not a backup\'s metadata ({"epoch": N, ...})'
        ) from None
    if isinstance(epoch, bool) or not isinstance(epoch, int) or not 1 <= epoch <= epochs:
        raise _damaged(
            run_dir,
            backup_dir,
            metadata,
            f"gives epoch {epoch!r} as finished, outside this run's 1..{epochs}",
        )
    finished = set()
    for row in read_history(history_path):
        try:
            finished.add(int(row["epoch"]))
        except (KeyError, TypeError, ValueError):
            pass  # Not a row: EpochCSVLogger drops it.
    missing = [e for e in range(epoch) if e not in finished]
    if missing:
        raise _damaged(
            run_dir,
            backup_dir,
            history_path,
            f"lacks the rows of {len(missing)} of the {epoch} epochs the backup gives as "
            f"finished (epochs {', '.join(str(e) for e in missing[:5])}, counted from 0)",
        )
    return epoch


def load_backup_weights(model, backup_dir, run_dir):
    """Loads the backup's weights (and optimizer state) into `model`, as
    `BackupAndRestore` will; ValueError naming the file if they cannot be loaded.

    Call it after `check_backup` found a backup, in the strategy's scope.
    """
    path = os.path.join(backup_dir, BACKUP_WEIGHTS_FILE)
    try:
        # As BackupAndRestore does: the optimizer's variables must exist to be loaded.
        if model.optimizer is not None and not model.optimizer.built:
            model.optimizer.build(model.trainable_variables)
        model.load_weights(path)
    except Exception as error:  # h5py and Keras raise many types for a damaged file.
        lines = str(error).strip().splitlines()
        reason = lines[0][:200] if lines else type(error).__name__
        raise _damaged(run_dir, backup_dir, path, f"cannot be loaded ({reason})") from None


class AtomicWeightsCheckpoint(keras.callbacks.Callback):
    """Saves the model's weights (and optimizer state) to `filepath` after every epoch,
    replacing the file atomically: a kill while writing leaves the previous file whole.

    `keras.callbacks.ModelCheckpoint(filepath, save_weights_only=True)` writes the file
    in place, and a kill during the write leaves it truncated.
    """

    def __init__(self, filepath):
        super().__init__()
        self.filepath = filepath
        self.last_saved_epoch = None  # The epoch whose end wrote the file, in this fit.

    def on_epoch_end(self, epoch, logs=None):
        os.makedirs(os.path.dirname(self.filepath) or ".", exist_ok=True)
        self.last_saved_epoch = None
        replace_atomically(
            self.filepath, lambda path: self.model.save_weights(path, overwrite=True)
        )
        self.last_saved_epoch = epoch


def backup_epoch(backup_dir):
    """The epoch a run backed up to `backup_dir` restarts at (0 without a backup)."""
    path = os.path.join(backup_dir, "training_metadata.json")
    try:
        with open(path) as f:
            return int(json.load(f)["epoch"])
    except (OSError, ValueError, KeyError, TypeError):
        return 0


class EpochCSVLogger(keras.callbacks.CSVLogger):
    """`keras.callbacks.CSVLogger(filename, append=True)` with one row per finished epoch.

    Put it before `BackupAndRestore` in the callbacks, so that an epoch's row is written
    before its backup. When training starts at epoch e (0, or where `BackupAndRestore`
    restored), rows of epochs >= e, written for epochs whose backup never happened, are
    dropped first, as is a half-written last line.
    """

    def __init__(self, filename, separator=","):
        super().__init__(filename, separator=separator, append=True)
        self._started = False

    def on_train_begin(self, logs=None):
        # The first epoch is not known yet (BackupAndRestore sets it in its own
        # on_train_begin): open the file at the first on_epoch_begin.
        self._started = False

    def on_epoch_begin(self, epoch, logs=None):
        if not self._started:
            self._started = True
            _drop_rows_from(self.filename, epoch, self.sep)
            super().on_train_begin(logs)


def _drop_rows_from(path, first_epoch, separator):
    """Rewrites the CSV at `path` without rows of epochs >= `first_epoch` or partial lines."""
    try:
        with open(path, newline="") as f:
            text = f.read()
    except FileNotFoundError:
        return
    lines = text[: text.rfind("\n") + 1].splitlines(keepends=True)
    if not lines:  # Not even a complete header.
        os.remove(path)
        return
    header, rows = lines[0], lines[1:]
    kept = [row for row in rows if _row_epoch(row, separator) < first_epoch]
    if len(kept) == len(rows) and len(text) == sum(len(line) for line in lines):
        return  # Nothing to drop.

    def write(temporary):
        with open(temporary, "w", newline="") as f:
            f.write(header + "".join(kept))

    replace_atomically(path, write)


def _row_epoch(row, separator):
    try:
        return int(row.split(separator, 1)[0])
    except ValueError:
        return float("inf")  # Not a row: dropped.


class EpochStats(keras.callbacks.Callback):
    """Adds `learning_rate` (at the epoch's end), and `epoch_seconds` and
    `images_per_second` of the training steps, to the epoch logs.

    The time runs from the start of the epoch to the end of its last training step
    (validation excluded). Put it before the callbacks that record the logs.

    Args:
        images_per_epoch: training images per epoch (steps x global batch size).
    """

    def __init__(self, images_per_epoch):
        super().__init__()
        self.images_per_epoch = images_per_epoch
        self._begin = None
        self._end = None

    def on_epoch_begin(self, epoch, logs=None):
        self._begin, self._end = time.perf_counter(), None

    def on_test_begin(self, logs=None):
        if self._begin is not None and self._end is None:
            self._end = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        if logs is None or self._begin is None:
            return
        seconds = (self._end or time.perf_counter()) - self._begin
        logs["learning_rate"] = float(
            keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)
        )
        logs["epoch_seconds"] = seconds
        logs["images_per_second"] = self.images_per_epoch / seconds


class NonFiniteLoss(ValueError):
    """The loss of an epoch is NaN or infinite (`StopOnNonFiniteLoss`).

    Attributes:
        epoch: the epoch, counted from 0.
        name: "loss" (training) or "val_loss".
        value: the loss, NaN or infinite.
    """

    def __init__(self, epoch, name, value):
        super().__init__(f"The {name} became {value} in epoch {epoch + 1}.")
        self.epoch, self.name, self.value = epoch, name, value


class StopOnNonFiniteLoss(keras.callbacks.Callback):
    """Raises `NonFiniteLoss` at the end of an epoch whose training or validation loss is
    NaN or infinite. Put it first: the callbacks after it (the history row, the
    checkpoint, the backup) then never record that epoch, and the run's files stay those
    of the last finite epoch.

    Unlike `keras.callbacks.TerminateOnNaN`, it looks at the epoch's mean loss, which any
    non-finite step makes non-finite, so that no step waits for its loss on the host.
    """

    def on_epoch_end(self, epoch, logs=None):
        for name in ("loss", "val_loss"):
            value = (logs or {}).get(name)
            if value is not None and not math.isfinite(float(value)):
                raise NonFiniteLoss(epoch, name, float(value))
