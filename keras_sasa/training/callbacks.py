"""Callbacks that make a run resumable after a kill at any moment, and time its epochs.

Keras' `BackupAndRestore` and `CSVLogger(append=True)` almost do it; what they miss:

- `BackupAndRestore` writes its weights file and then its metadata file in place. A kill
  during the weights leaves a truncated HDF5 file; a kill during the metadata leaves an
  empty JSON file, and every later start fails on it. `AtomicBackupAndRestore` writes both
  to temporary files and renames them into place, and records the epoch in the weights
  file too, so that the pair can be checked against each other (`check_backup`).
- `CSVLogger(append=True)` appends one row per epoch and never removes one. Whatever its
  place among the callbacks, a kill between its row and the backup of the same epoch
  either loses the row (backup first) or writes it twice (row first: the epoch is
  trained again after the restart). `EpochCSVLogger` runs before the backup and, when
  training (re)starts at epoch e, first drops the rows of epochs >= e (and a half-written
  last line, and all but the last row of an epoch written twice), so each finished epoch
  has exactly one row.
"""

import functools
import json
import math
import os
import shutil
import time
import warnings

import h5py
import keras

from keras_sasa.training.run_files import read_history
from keras_sasa.training.run_files import replace_atomically
from keras_sasa.training.run_files import write_json_atomically


class AtomicBackupAndRestore(keras.callbacks.BackupAndRestore):
    """`keras.callbacks.BackupAndRestore` whose backup files are replaced atomically.

    The weights (with the optimizer's state: momentum, EMA, step count) are written first,
    then the metadata (the epoch to restart at); each goes to a temporary file that is
    renamed into place. A kill while writing leaves the previous backup whole. The weights
    file also records the epoch it ends (an HDF5 attribute, `BACKUP_EPOCH_ATTRIBUTE`): a
    kill in the microseconds between the two renames leaves the new weights with the
    previous epoch's metadata, which `check_backup` finds and repairs.

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
            # The checkpoint records the same epoch.
            write = functools.partial(shutil.copyfile, source.filepath)
        else:
            save = functools.partial(self.model.save_weights, overwrite=True)
            write = functools.partial(_write_with_epoch, save, self._current_epoch)
        replace_atomically(self._weights_path, write)
        metadata = {"epoch": self._current_epoch, "batch": self._last_batch_seen}
        write_json_atomically(self._training_metadata_path, metadata)


BACKUP_WEIGHTS_FILE = "latest.weights.h5"  # BackupAndRestore's file names
BACKUP_METADATA_FILE = "training_metadata.json"
# The epoch a backup's weights end, written into the weights file itself: Keras'
# load_weights reads the groups, not the file's attributes.
BACKUP_EPOCH_ATTRIBUTE = "keras_sasa_backup_epoch"


def _write_with_epoch(write, epoch, path):
    write(path)
    with h5py.File(path, "r+") as f:
        f.attrs[BACKUP_EPOCH_ATTRIBUTE] = epoch


def _damaged(run_dir, backup_dir, path, problem):
    return ValueError(
        f"Cannot resume the run in {run_dir}: {path} {problem}. Delete {backup_dir} to "
        f"train the run again from its first epoch, or delete {run_dir} to start over."
    )


def check_backup(backup_dir, epochs, history_path, run_dir, log=print, columns=()):
    """The epoch a run restarts at from its `BackupAndRestore` state (0 without one),
    once the backup is found whole and consistent.

    `BackupAndRestore` would restore a damaged backup with a raw error naming no file
    (truncated weights, empty metadata), or silently train from scratch under the epoch
    numbers of the metadata (weights deleted), or train nothing and report the
    untrained model (an epoch beyond the run's), or resume the weights of one epoch
    under the epoch number of another. The backup's weights and metadata must both be
    there, the metadata must give an epoch in 1..`epochs`, the weights file must record
    the same epoch, and `history_path` must hold a row of numbers for every epoch the
    backup says is finished, under a header with each of `columns`. Whether the weights
    load is checked by `load_backup_weights`, once the model is built.

    One inconsistent state is repaired rather than refused: weights one epoch ahead of
    their metadata (of the first epoch, without metadata), which a kill between the two
    renames of `AtomicBackupAndRestore` leaves. The weights are the later epoch's, whole,
    and its history row was written before them: the metadata is rewritten to their
    epoch, and `log` says so.

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
    weights_epoch = _weights_epoch(weights, run_dir, backup_dir)
    if has_metadata:
        stored = _read_metadata(metadata, epochs, run_dir, backup_dir)
    else:  # Killed between the two renames of the first backup, or deleted.
        stored = {"epoch": 0, "batch": 0}
    epoch = stored["epoch"]
    if weights_epoch != epoch:
        if weights_epoch != epoch + 1 or not _is_epoch(weights_epoch, epochs):
            if not has_metadata:
                raise _damaged(
                    run_dir, backup_dir, metadata, f"is missing (its {weights} is there)"
                )
            raise _damaged(
                run_dir,
                backup_dir,
                weights,
                f"holds the weights of epoch {weights_epoch!r}, but {metadata} gives epoch {epoch}",
            )
        write_json_atomically(metadata, {**stored, "epoch": weights_epoch})
        said = f"gave epoch {epoch}" if has_metadata else "was missing"
        log(
            f"{run_dir}: the backup's metadata {said}, its weights epoch {weights_epoch} "
            f"(stopped between the two writes); {metadata} now gives epoch {weights_epoch}."
        )
        epoch = weights_epoch
    _check_history_rows(history_path, epoch, run_dir, backup_dir, columns)
    return epoch


def _read_metadata(path, epochs, run_dir, backup_dir):
    """The backup's metadata, {"epoch": N, ...} with N in 1..`epochs`."""
    try:
        with open(path) as f:
            stored = json.load(f)
        epoch = stored["epoch"]
    except (ValueError, KeyError, TypeError, IndexError):
        raise _damaged(
            run_dir, backup_dir, path, 'is not a backup\'s metadata ({"epoch": N, ...})'
        ) from None
    if not _is_epoch(epoch, epochs):
        raise _damaged(
            run_dir,
            backup_dir,
            path,
            f"gives epoch {epoch!r} as finished, outside this run's 1..{epochs}",
        )
    return stored


def _is_epoch(value, epochs):
    return not isinstance(value, bool) and isinstance(value, int) and 1 <= value <= epochs


def _weights_epoch(path, run_dir, backup_dir):
    """The epoch `AtomicBackupAndRestore` recorded in the weights file at `path`."""
    try:
        with h5py.File(path, "r") as f:
            epoch = f.attrs.get(BACKUP_EPOCH_ATTRIBUTE)
    except (OSError, ValueError) as error:  # Not HDF5, or truncated.
        reason = str(error).strip().splitlines()[0][:200] if str(error).strip() else ""
        raise _damaged(
            run_dir, backup_dir, path, f"is not a readable weights file ({reason})"
        ) from None
    if epoch is None:
        raise _damaged(run_dir, backup_dir, path, "records no epoch: it is not this run's backup")
    return int(epoch)


def _check_history_rows(history_path, epoch, run_dir, backup_dir, columns):
    """Refuses a history file that lacks one of `columns`, or a whole row of numbers for
    one of the first `epoch` epochs."""
    try:
        rows = read_history(history_path)
    except ValueError as error:  # "<history_path> is not ..."
        problem = str(error).removeprefix(f"{history_path} ")
        raise _damaged(run_dir, backup_dir, history_path, problem) from None
    finished = {}
    for row in rows:
        try:
            finished[int(row["epoch"])] = row  # The last row of an epoch is kept.
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
    absent = [column for column in columns if column not in rows[0]] if epoch else []
    if absent:
        raise _damaged(run_dir, backup_dir, history_path, f"has no column {', '.join(absent)}")
    for e in range(epoch):
        row = finished[e]
        if None in row or None in row.values() or not all(map(_is_number, row.values())):
            raise _damaged(
                run_dir,
                backup_dir,
                history_path,
                f"holds a damaged row for epoch {e} (counted from 0): not one number per column",
            )


def _is_number(text):
    if text == "NA":  # CSVLogger's word for a value an epoch did not log.
        return True
    try:
        float(text)
    except ValueError:
        return False
    return True


def load_backup_weights(model, backup_dir, run_dir):
    """Loads the backup's weights (and optimizer state) into `model`, as
    `BackupAndRestore` will; ValueError naming the file if they cannot be loaded.

    Keras loads what matches and only warns about the rest (an optimizer with other
    variables, a nested layer missing from the file): a warning is taken as a failure,
    since the model would resume partly untrained.

    Call it after `check_backup` found a backup, in the strategy's scope.
    """
    path = os.path.join(backup_dir, BACKUP_WEIGHTS_FILE)
    try:
        # As BackupAndRestore does: the optimizer's variables must exist to be loaded.
        if model.optimizer is not None and not model.optimizer.built:
            model.optimizer.build(model.trainable_variables)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            model.load_weights(path)
        if caught:
            raise ValueError(str(caught[0].message))
    except Exception as error:  # h5py and Keras raise many types for a damaged file.
        lines = str(error).strip().splitlines()
        reason = lines[0][:200] if lines else type(error).__name__
        raise _damaged(run_dir, backup_dir, path, f"cannot be loaded ({reason})") from None


class AtomicWeightsCheckpoint(keras.callbacks.Callback):
    """Saves the model's weights (and optimizer state) to `filepath` after every epoch,
    replacing the file atomically: a kill while writing leaves the previous file whole.
    The file records the epochs it ends (`BACKUP_EPOCH_ATTRIBUTE`), as a backup's does.

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
        save = functools.partial(self.model.save_weights, overwrite=True)
        # As a backup's weights do, the file records the number of epochs it ends.
        replace_atomically(self.filepath, functools.partial(_write_with_epoch, save, epoch + 1))
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
    dropped first, as are a half-written last line and the earlier rows of an epoch
    written twice.
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
            keep_rows_before(self.filename, epoch, self.sep)
            super().on_train_begin(logs)


def keep_rows_before(path, first_epoch, separator=","):
    """Rewrites the CSV at `path` with one row for each epoch before `first_epoch`, in
    order: without the rows of later epochs, partial lines, or all but the last row of an
    epoch written twice (the last is the epoch the backup holds). At epoch 0 the file is
    removed, whatever it holds."""
    if first_epoch == 0:
        if os.path.exists(path):
            os.remove(path)
        return
    try:
        with open(path, newline="") as f:
            text = f.read()
    except FileNotFoundError:
        return
    except UnicodeDecodeError as error:
        raise ValueError(f"{path} is damaged (not UTF-8 text: {error.reason}).") from None
    lines = text[: text.rfind("\n") + 1].splitlines(keepends=True)
    if not lines:  # Not even a complete header.
        os.remove(path)
        return
    header, rows = lines[0], lines[1:]
    by_epoch = {}
    for row in rows:
        epoch = _row_epoch(row, separator)
        if epoch < first_epoch:
            by_epoch[epoch] = row
    kept = header + "".join(by_epoch[epoch] for epoch in sorted(by_epoch))
    if kept == text:
        return  # Nothing to drop.

    def write(temporary):
        with open(temporary, "w", newline="") as f:
            f.write(kept)

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
