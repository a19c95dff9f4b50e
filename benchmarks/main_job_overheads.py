"""Where the main job's time goes besides its training steps (issue 12's wall time).

    python benchmarks/main_job_overheads.py [--epochs 5]

Prints, for the default small-image SASA model and its conv baseline on digits:

1. per epoch inside `fit` (`training.train`, the `train` command's code): the seconds of
   the validation `evaluate` and of each callback's `on_epoch_end` (checkpoint, backup,
   EMA swap, logs);
2. the first training step (tracing and graph optimisation) against a later one, with
   the attention layers' `auto` (blocked) path, the `unrolled` path, and the conv
   baseline, batch 64, without XLA (the `train` default on CPUs);
3. the graph ops of one attention layer's forward and forward + backward pass;
4. one attention layer's forward + backward time at each group's shape of the default
   model, per implementation (median of 30).

Results of 2026-11-30 (2-core CPU, quiet): benchmarks/results/main_job/overheads.txt.
"""

import argparse
import collections
import os
import shutil
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from keras_sasa import training  # noqa: E402
from keras_sasa.layers import LocalSelfAttention2D  # noqa: E402
from keras_sasa.models import resnet  # noqa: E402
from keras_sasa.training.config import SMALL_IMAGE_DEFAULTS  # noqa: E402

# The main job's model: the small-image defaults.
SMALL = {
    name: SMALL_IMAGE_DEFAULTS[name] for name in ("stem", "kernel_size", "num_heads", "base_width")
}
STRIDES = SMALL_IMAGE_DEFAULTS["stage_strides"]
# (batch, height, width, channels) of the attention layers of groups 1-4 on 8x8 digits.
GROUP_SHAPES = [(64, 8, 8, 16), (64, 8, 8, 32), (64, 4, 4, 64), (64, 2, 2, 128)]


def epoch_overheads(epochs):
    times = collections.defaultdict(list)

    def on_epoch_end(self, epoch, logs=None):
        logs = {k: float(v) for k, v in (logs or {}).items()}
        for callback in self.callbacks:
            start = time.perf_counter()
            callback.on_epoch_end(epoch, logs)
            times[type(callback).__name__].append(time.perf_counter() - start)

    evaluate = keras.Model.evaluate

    def timed_evaluate(self, *args, **kwargs):
        start = time.perf_counter()
        result = evaluate(self, *args, **kwargs)
        times["evaluate"].append(time.perf_counter() - start)
        return result

    keras.callbacks.CallbackList.on_epoch_end = on_epoch_end
    keras.Model.evaluate = timed_evaluate
    for name, stages in (("SASA", None), ("conv", ())):
        times.clear()
        out = tempfile.mkdtemp()
        config = training.TrainConfig(
            epochs=epochs, output_dir=out, verbose=0, attention_stages=stages
        )
        training.train(config, log=lambda message: None)
        shutil.rmtree(out, ignore_errors=True)
        # evaluate: the first call traces; the last two are the final test and train
        # split evaluations.
        validation = times.pop("evaluate")[1:-2]
        print(f"{name}: validation evaluate, median {np.median(validation):.3f} s per epoch")
        for callback, seconds in times.items():
            print(f"{name}: {callback}.on_epoch_end, median {np.median(seconds[1:]):.3f} s")


def first_step(implementation):
    x = np.random.rand(64, 8, 8, 1).astype("float32")
    y = np.random.randint(0, 10, 64)
    model = resnet.SASAResNet26(
        input_shape=(8, 8, 1),
        classes=10,
        stackwise_strides=STRIDES,
        implementation="auto" if implementation == "conv" else implementation,
        attention_stages=() if implementation == "conv" else None,
        **SMALL,
    )
    optimizer = keras.optimizers.SGD(0.01, momentum=0.9, nesterov=True, use_ema=True)
    model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy", jit_compile=False)
    optimizer.build(model.trainable_variables)
    start = time.perf_counter()
    model.train_on_batch(x, y)
    first = time.perf_counter() - start
    later = []
    for _ in range(10):
        start = time.perf_counter()
        model.train_on_batch(x, y)
        later.append(time.perf_counter() - start)
    later_ms = 1e3 * np.median(later)
    print(f"{implementation}: first step {first:.1f} s, later steps {later_ms:.0f} ms")


def _forward_backward(layer):
    def forward_backward(x):
        with tf.GradientTape() as tape:
            y = layer(x)
            loss = tf.reduce_sum(y * y)
        return tape.gradient(loss, layer.trainable_weights)

    return forward_backward


def layer_ops():
    shape = GROUP_SHAPES[0]
    layer = LocalSelfAttention2D(shape[-1], kernel_size=3, num_heads=2)
    layer.build(shape)

    forward_backward = tf.function(_forward_backward(layer))
    spec = tf.TensorSpec(shape)
    both = forward_backward.get_concrete_function(spec).graph.get_operations()
    forward = tf.function(layer).get_concrete_function(spec).graph.get_operations()
    kinds = collections.Counter(op.type for op in both).most_common(4)
    print(
        f"one attention layer: {len(forward)} graph ops forward, {len(both)} forward + "
        f"backward, most common {kinds}"
    )


def layer_times():
    for shape in GROUP_SHAPES:
        x = tf.random.normal(shape)
        row = []
        for implementation in ("auto", "unrolled", "reference"):
            layer = LocalSelfAttention2D(
                shape[-1], kernel_size=3, num_heads=2, implementation=implementation
            )
            layer(x)

            step = tf.function(_forward_backward(layer))
            step(x)
            step(x)
            seconds = []
            for _ in range(30):
                start = time.perf_counter()
                step(x)
                seconds.append(time.perf_counter() - start)
            row.append(f"{implementation} {1e3 * np.median(seconds):.2f} ms")
        print(f"layer at {shape}: " + ", ".join(row))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=5)
    args = parser.parse_args()
    layer_ops()
    layer_times()
    for implementation in ("auto", "unrolled", "conv"):
        first_step(implementation)
    epoch_overheads(args.epochs)
