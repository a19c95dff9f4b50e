"""One worker of a multi-worker training job, for tests/test_distribute.py.

    python tests/multi_worker_fit.py --workers 127.0.0.1:P0,127.0.0.1:P1 --index 0 \
        --data-dir D --backup-dir B --out RESULT.npz [--hang-after-epoch E]

Sets TF_CONFIG for worker `--index` of the cluster `--workers`, builds the strategy with
`keras_sasa.distribute.get_strategy("auto")` and trains `build_model()` on `training_data`.
With `--hang-after-epoch E` it writes RESULT.npz.hanging once epoch E has been backed up
and then waits to be killed, as a preempted machine would be. The test imports
`build_model`, `training_data` and `compile_model` to train the same model in one process.
"""

import argparse
import json
import os
import sys
import time

EPOCHS = 3
GLOBAL_BATCH_SIZE = 64
SPLIT = "train[:512]"  # 8 full global batches per epoch
SEED = 1234


def build_model():
    import keras

    import keras_sasa

    keras.utils.set_random_seed(SEED)
    return keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(8, 3, padding="same"),
            keras_sasa.LocalSelfAttention2D(8, kernel_size=3, num_heads=2),
            keras.layers.Flatten(),
            keras.layers.Dense(10),
        ]
    )


def compile_model(model, strategy=None):
    import keras

    from keras_sasa import distribute

    jit_compile, steps_per_execution = distribute.fit_options(strategy)
    model.compile(
        optimizer=keras.optimizers.SGD(learning_rate=0.1),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=jit_compile,
        steps_per_execution=steps_per_execution,
    )


def training_data(data_dir):
    from keras_sasa import data

    # In order and without augmentation, so that every run sees the same batches.
    return data.load_dataset(
        "digits",
        SPLIT,
        GLOBAL_BATCH_SIZE,
        data_dir=data_dir,
        training=False,
        drop_remainder=True,
    )


def main(argv=None):
    parser = argparse.ArgumentParser()
    parser.add_argument("--workers", required=True)
    parser.add_argument("--index", type=int, required=True)
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--backup-dir", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--hang-after-epoch", type=int, default=None)
    args = parser.parse_args(argv)

    os.environ["TF_CONFIG"] = json.dumps(
        {
            "cluster": {"worker": args.workers.split(",")},
            "task": {"type": "worker", "index": args.index},
        }
    )
    import numpy as np
    import tensorflow as tf

    # Two workers share the test machine's cores.
    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    import keras

    from keras_sasa import distribute

    strategy = distribute.get_strategy("auto")
    dataset = training_data(args.data_dir)
    with strategy.scope():
        model = build_model()
        compile_model(model, strategy)

    epochs_run = []

    class Hang(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            # Runs after BackupAndRestore (earlier in the list) has saved this epoch.
            if args.hang_after_epoch is not None and epoch + 1 == args.hang_after_epoch:
                with open(args.out + ".hanging", "w") as f:
                    json.dump(epochs_run, f)
                while True:
                    time.sleep(1)

    class RecordEpochs(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            epochs_run.append(epoch)

    backup = keras.callbacks.BackupAndRestore(distribute.worker_dir(args.backup_dir, strategy))
    history = model.fit(
        dataset, epochs=EPOCHS, verbose=0, callbacks=[RecordEpochs(), backup, Hang()]
    )
    np.savez(
        args.out,
        strategy=type(strategy).__name__,
        replicas=strategy.num_replicas_in_sync,
        epochs_run=np.array(epochs_run),
        loss=np.array(history.history["loss"]),
        **{f"weight_{i}": np.asarray(w) for i, w in enumerate(model.get_weights())},
    )


if __name__ == "__main__":
    sys.exit(main())
