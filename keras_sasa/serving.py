"""Serving latency of exported SASA-ResNet-26 against its conv twin, and int8 calibration.

`run_serving` exports each model the way `python -m keras_sasa export` does (ONNX through
`export.to_onnx`, TFLite through `export.to_tflite`) and times one forward pass in ONNX
Runtime, in LiteRT and with Keras's `predict_on_batch`, at batch 1 and 8: the median and
90th percentile of repeated calls. All contenders of one image size and batch run in the
same process, round-robin, so that their ratios hold where the machine's speed drifts.
Models are randomly initialised (latency does not depend on the weights).

Sizes (`SIZES`): 32 x 32 with the small-image stem and settings the `train` command picks
for small images (`training.config.SMALL_IMAGE_DEFAULTS`), and 224 x 224 with the conv
stem and the paper's settings (k = 7, 8 heads, width 64). The conv twin is the same model
with `attention_stages=()`.

`calibration_images` reads the images `export --quantize int8` calibrates on.
"""

import contextlib
import dataclasses
import json
import os
import statistics
import tempfile
import time

import keras
import numpy as np

from keras_sasa import export
from keras_sasa.models import SASAResNet
from keras_sasa.models import SASAResNet26

RUNTIMES = ("onnxruntime", "litert", "keras")
# How many training images `export --quantize int8` calibrates on.
CALIBRATION_IMAGES = 200


def _small_image_settings():
    from keras_sasa.training.config import SMALL_IMAGE_DEFAULTS

    return {
        "stem": SMALL_IMAGE_DEFAULTS["stem"],
        "stackwise_strides": SMALL_IMAGE_DEFAULTS["stage_strides"],
        "kernel_size": SMALL_IMAGE_DEFAULTS["kernel_size"],
        "num_heads": SMALL_IMAGE_DEFAULTS["num_heads"],
        "base_width": SMALL_IMAGE_DEFAULTS["base_width"],
    }


def serving_model(size, attention, quick=False):
    """SASA-ResNet-26 (or its conv twin) at `size`: the small-image settings up to 64
    pixels, else the conv stem with the paper's settings; 10 classes at small sizes, 1000
    at large. `quick`: a one-block-per-group model of width 4, to check the tools."""
    keras.utils.set_random_seed(0)
    stages = (1, 2, 3, 4) if attention else ()
    name = "sasa" if attention else "conv"
    if quick:
        return SASAResNet(
            (1, 1, 1, 1),
            input_shape=(size, size, 3),
            classes=10,
            attention_stages=stages,
            stem="conv_small",
            stackwise_strides=(1, 1, 2, 2),
            kernel_size=3,
            num_heads=2,
            base_width=4,
            name=name,
        )
    if size <= 64:
        return SASAResNet26(
            input_shape=(size, size, 3),
            classes=10,
            attention_stages=stages,
            name=name,
            **_small_image_settings(),
        )
    return SASAResNet26(
        input_shape=(size, size, 3), stem="conv", attention_stages=stages, name=name
    )


@dataclasses.dataclass
class ServingResult:
    model: str  # "sasa" or "conv"
    size: int
    batch: int
    runtime: str
    median_ms: float
    p90_ms: float
    runs: int


def _onnx_runner(model, directory, threads=None):
    import onnxruntime

    path = os.path.join(directory, f"{model.name}.onnx")
    export.to_onnx(model, path)
    options = onnxruntime.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    session = onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda x: session.run(None, {name: x})[0]


def litert_runner(flatbuffer, threads=None):
    interpreter = export.tflite_interpreter(
        flatbuffer=flatbuffer, num_threads=threads or os.cpu_count()
    )
    # Allocated now, with the export: LiteRT writes a line on stderr at the first
    # allocation (its XNNPACK delegate), which `bench --serving` sends to its log.
    interpreter.allocate_tensors()
    source = interpreter.get_input_details()[0]["index"]
    target = interpreter.get_output_details()[0]["index"]
    shape = [None]

    def run(x):
        if shape[0] != x.shape:  # Resized once per batch size.
            interpreter.resize_tensor_input(source, x.shape)
            interpreter.allocate_tensors()
            shape[0] = x.shape
        interpreter.set_tensor(source, x)
        interpreter.invoke()
        return interpreter.get_tensor(target)

    return run


def runners(model, directory, runtimes=RUNTIMES, threads=None):
    """`{runtime: function(images) -> outputs}` for `model`, exported where needed.

    `threads`: the CPU threads of ONNX Runtime and LiteRT (None: ONNX Runtime's default,
    one per core, and as many for LiteRT); Keras's are TensorFlow's (`limit_threads`).
    """
    made = {}
    for runtime in runtimes:
        if runtime == "onnxruntime":
            made[runtime] = _onnx_runner(model, directory, threads)
        elif runtime == "litert":
            made[runtime] = litert_runner(export.to_tflite(model), threads)
        else:
            made[runtime] = model.predict_on_batch
    return made


def limit_threads(threads):
    """Runs TensorFlow (Keras's backend here) on `threads` CPU threads; must come before
    TensorFlow runs its first op. On a shared machine, runtimes that spin a thread per core
    wait on each other's preempted threads: one thread each gives stable ratios."""
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)


def time_round_robin(contenders, x, runs, warmup=2):
    """`{key: [ms, ...]}`: each contender called `runs` times on `x`, in turn."""
    for run in contenders.values():
        for _ in range(warmup):
            run(x)
    times = {key: [] for key in contenders}
    for _ in range(runs):
        for key, run in contenders.items():
            start = time.perf_counter()
            run(x)
            times[key].append((time.perf_counter() - start) * 1000)
    return times


def percentile(values, q):
    return float(np.percentile(np.asarray(values), q))


def run_serving(
    sizes=(32, 224),
    batches=(1, 8),
    runs=20,
    quick=False,
    log=print,
    exporting=contextlib.nullcontext,
    threads=None,
):
    """Latency of SASA-ResNet-26 and its conv twin per size, batch and runtime.

    `exporting`: a context manager factory the exports run under (the command sends the
    converters' chatter to a log with it). `threads`: CPU threads of every runtime (None:
    their defaults); see `runners` and `limit_threads`.
    """
    results = []
    for size in sizes:
        with tempfile.TemporaryDirectory() as directory:
            contenders = {}
            for attention in (True, False):
                model = serving_model(size, attention, quick)
                log(f"exporting {model.name} at {size}x{size}")
                with exporting():
                    made = runners(model, directory, threads=threads)
                for runtime, run in made.items():
                    contenders[(model.name, runtime)] = run
            for batch in batches:
                x = np.random.default_rng(0).uniform(size=(batch, size, size, 3))
                times = time_round_robin(contenders, x.astype("float32"), runs)
                for (name, runtime), values in times.items():
                    results.append(
                        ServingResult(
                            name,
                            size,
                            batch,
                            runtime,
                            statistics.median(values),
                            percentile(values, 90),
                            runs,
                        )
                    )
                    log(f"{name} {size} batch {batch} {runtime}: {results[-1].median_ms:.2f} ms")
    return results


def serving_table(results):
    """Markdown: one row per size, batch and runtime, SASA beside conv."""
    rows = [
        "| input | batch | runtime | SASA median ms | SASA p90 ms | conv median ms "
        "| conv p90 ms | SASA / conv |",
        "|---|---|---|---|---|---|---|---|",
    ]
    by = {(r.size, r.batch, r.runtime, r.model): r for r in results}
    for size, batch, runtime in dict.fromkeys((r.size, r.batch, r.runtime) for r in results):
        sasa, conv = by[(size, batch, runtime, "sasa")], by[(size, batch, runtime, "conv")]
        rows.append(
            f"| {size}x{size} | {batch} | {runtime} | {sasa.median_ms:.2f} | {sasa.p90_ms:.2f} "
            f"| {conv.median_ms:.2f} | {conv.p90_ms:.2f} | "
            f"{sasa.median_ms / conv.median_ms:.1f}x |"
        )
    return "\n".join(rows)


def result_name(sizes, batches, quick=False, threads=None):
    """The results' file name (no extension), named by configuration."""
    name = f"serving-{'-'.join(map(str, sizes))}-batch{'-'.join(map(str, batches))}"
    if threads is not None:
        name += f"-threads{threads}"
    return name + "-quick" if quick else name


def write_serving(results, output_dir, name, machine, threads=None):
    """Writes `name.json` and `name.md` under `output_dir`; returns the Markdown."""
    threads_note = (
        "Each runtime's default threads" if threads is None else f"{threads} thread(s) each"
    )
    os.makedirs(output_dir, exist_ok=True)
    with open(os.path.join(output_dir, f"{name}.json"), "w") as f:
        json.dump([dataclasses.asdict(r) for r in results], f, indent=1)
    text = (
        "# Serving latency: SASA-ResNet-26 against its conv twin\n\n"
        f"Machine: {machine}. {threads_note}. One forward pass of the exported model, median "
        f"and 90th percentile of {results[0].runs} calls, contenders round-robin in one "
        "process. "
        "onnxruntime: `export.to_onnx` (blocked attention); litert: `export.to_tflite` "
        "(blocked attention); keras: `predict_on_batch`.\n\n" + serving_table(results) + "\n"
    )
    with open(os.path.join(output_dir, f"{name}.md"), "w") as f:
        f.write(text)
    return text


def calibration_images(dataset, image_shape, count=CALIBRATION_IMAGES, data_dir=None):
    """The first `count` images of `dataset`'s training split, as the model takes them
    (`split_images`): a float32 array `(count, H, W, C)`, fewer where the split is
    smaller."""
    from keras_sasa import data

    split = data.dataset_info(dataset, data_dir=data_dir).train_split
    return split_images(dataset, split, image_shape, count, data_dir)[0]


def split_images(dataset, split, image_shape, count=None, data_dir=None):
    """`(images, labels)` of a split as NumPy arrays: the first `count` (None: all).

    Read like the test split (in order, unaugmented), resized to `image_shape`'s height
    where the data set's native size differs; float32 images in [0, 1].
    """
    from keras_sasa import data

    info = data.dataset_info(dataset, data_dir=data_dir)
    native = info.image_shape[0] if info.image_shape[0] == info.image_shape[1] else None
    size = image_shape[0]
    batches = data.load_dataset(
        dataset,
        split,
        count or 256,
        data_dir=data_dir,
        image_size=None if size == native else size,
        cache=False,
    )
    images, labels = [], []
    for x, y in batches.take(1) if count else batches:
        images.append(np.asarray(x, dtype="float32"))
        labels.append(np.asarray(y))
    return np.concatenate(images), np.concatenate(labels)
