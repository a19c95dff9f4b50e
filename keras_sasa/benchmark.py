"""Speed and memory of LocalSelfAttention2D against its reference and a 3x3 convolution.

Every number is one training step of a single layer: forward and backward, with the
gradients of the input and of every weight. All contenders of a backend run in the same
process on the same inputs, so the ratios hold even where the absolute times drift.

The backend is Keras' (`KERAS_BACKEND`): TensorFlow runs the step as a `tf.function`,
with and without XLA, and reports the allocator's peak memory; JAX runs it under
`jax.jit` (always XLA; JAX's CPU client reports no memory). `run_in_backend` measures
another backend in a subprocess, for the side-by-side table (`backend_table`).
"""

import dataclasses
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time

import keras
import tensorflow as tf

from keras_sasa.distribute import dtype_policy
from keras_sasa.layers import LocalSelfAttention2D

# ResNet-50's four groups at 224 x 224 (batch, size, channels), and the kernel sizes of
# the paper's Table 4.
GROUP_SHAPES = [(8, 56, 64), (8, 28, 128), (8, 14, 256), (8, 7, 512)]
KERNEL_SIZES = [3, 5, 7, 9, 11]
CONTENDERS = ("auto", "reference", "conv3x3")
# The Keras dtype policy that computes in each measured dtype.
_POLICIES = {"float32": "float32", "bfloat16": "mixed_bfloat16"}


@dataclasses.dataclass
class Result:
    shape: tuple
    kernel_size: int
    dtype: str
    jit_compile: bool
    contender: str
    milliseconds: float
    peak_mib: float
    backend: str = "tensorflow"


def _layer(contender, channels, kernel_size):
    if contender == "conv3x3":
        return keras.layers.Conv2D(channels, 3, padding="same", use_bias=False)
    return LocalSelfAttention2D(
        channels, kernel_size=kernel_size, num_heads=8, implementation=contender
    )


def _peak_mib(step, x):
    device = "CPU:0" if not tf.config.list_logical_devices("GPU") else "GPU:0"
    tf.config.experimental.reset_memory_stats(device)
    before = tf.config.experimental.get_memory_info(device)["current"]
    for g in step(x):
        g.numpy()
    return (tf.config.experimental.get_memory_info(device)["peak"] - before) / 2**20


def _median_ms(run, repeats):
    """Median wall time of `run()` over `repeats` calls, in milliseconds."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def layer_training_step(layer, x, jit_compile):
    """Builds `layer` for `x` and returns one training step as a `tf.function`: the
    gradients of a mean-square loss with respect to the input and every weight."""
    layer.build(x.shape)
    weights = layer.trainable_variables

    @tf.function(jit_compile=jit_compile)
    def step(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = tf.cast(layer(x), "float32")
            loss = tf.reduce_mean(y * y)
        return [tf.convert_to_tensor(g) for g in tape.gradient(loss, [x, *weights])]

    return step


def measure(contender, shape, kernel_size, jit_compile, dtype="float32", repeats=3):
    """Median milliseconds and peak extra memory (MiB) of one layer training step."""
    if keras.backend.backend() == "jax":
        return _measure_jax(contender, shape, kernel_size, dtype, repeats)
    batch, size, channels = shape
    with dtype_policy(_POLICIES[dtype]):
        layer = _layer(contender, channels, kernel_size)
        x = tf.random.normal((batch, size, size, channels))
        step = layer_training_step(layer, x, jit_compile)

        def run():
            for g in step(x):
                g.numpy()

        run()  # trace and compile
        peak = _peak_mib(step, x)
        milliseconds = _median_ms(run, repeats)
    return Result(shape, kernel_size, dtype, jit_compile, contender, milliseconds, peak)


def _measure_jax(contender, shape, kernel_size, dtype, repeats):
    """`measure` on the JAX backend: the step under `jax.jit`; no memory figure."""
    import jax
    import jax.numpy as jnp

    batch, size, channels = shape
    with dtype_policy(_POLICIES[dtype]):
        layer = _layer(contender, channels, kernel_size)
        x = jax.random.normal(jax.random.key(0), (batch, size, size, channels))
        layer.build(x.shape)
        trainable = [v.value for v in layer.trainable_variables]
        frozen = [v.value for v in layer.non_trainable_variables]

        def loss(trainable, x):
            y, _ = layer.stateless_call(trainable, frozen, x)
            y = y.astype("float32")
            return jnp.mean(y * y)

        step = jax.jit(jax.grad(loss, argnums=(0, 1)))

        def run():
            jax.block_until_ready(step(trainable, x))

        run()  # trace and compile
        milliseconds = _median_ms(run, repeats)
    return Result(shape, kernel_size, dtype, True, contender, milliseconds, math.nan, "jax")


_RESULTS_MARK = "keras_sasa.benchmark results: "


def run_in_backend(backend, configs, repeats=3, log=print):
    """`run(configs)` under another Keras backend, in a subprocess (the backend is fixed
    when Keras is imported). JAX always compiles, so it runs with jit only."""
    code = (
        "import json, sys\n"
        "from keras_sasa import benchmark\n"
        "configs = [(tuple(s), k, d) for s, k, d in json.loads(sys.argv[1])]\n"
        "results = benchmark.run(configs, (True,), int(sys.argv[2]), log=print)\n"
        f"print({_RESULTS_MARK!r} + json.dumps([r.__dict__ for r in results]))\n"
    )
    env = {**os.environ, "KERAS_BACKEND": backend}
    process = subprocess.Popen(
        [sys.executable, "-c", code, json.dumps(configs), str(repeats)],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    results = []
    for line in process.stdout:
        if line.startswith(_RESULTS_MARK):
            rows = json.loads(line[len(_RESULTS_MARK) :])
            results = [Result(**{**r, "shape": tuple(r["shape"])}) for r in rows]
        else:
            log(f"[{backend}] {line.rstrip()}")
    if process.wait() != 0:
        raise RuntimeError(f"The {backend} benchmark failed (exit code {process.returncode}).")
    return results


def backend_table(results):
    """The fast path and Conv2D per backend, one row per (shape, kernel, dtype)."""
    rows = [
        "| input (B, H=W, C) | k | dtype | TF fast ms | TF+XLA fast ms | JAX fast ms "
        "| TF ref ms | JAX ref ms | TF conv ms | JAX conv ms | JAX / TF+XLA (fast) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    by = {}
    for r in results:
        column = "jax" if r.backend == "jax" else ("xla" if r.jit_compile else "tf")
        by.setdefault((r.shape, r.kernel_size, r.dtype), {})[(column, r.contender)] = r

    def ms(group, column, contender):
        r = group.get((column, contender))
        return f"{r.milliseconds:.1f}" if r else "-"

    for (shape, k, dtype), group in by.items():
        fast_xla, fast_jax = group.get(("xla", "auto")), group.get(("jax", "auto"))
        ratio = (
            f"{fast_jax.milliseconds / fast_xla.milliseconds:.2f}" if fast_xla and fast_jax else "-"
        )
        rows.append(
            f"| {shape} | {k} | {dtype} | {ms(group, 'tf', 'auto')} | "
            f"{ms(group, 'xla', 'auto')} | {ms(group, 'jax', 'auto')} | "
            f"{ms(group, 'xla', 'reference')} | {ms(group, 'jax', 'reference')} | "
            f"{ms(group, 'xla', 'conv3x3')} | {ms(group, 'jax', 'conv3x3')} | {ratio} |"
        )
    return "\n".join(rows)


@dataclasses.dataclass
class ModelResult:
    model: str
    input_size: int
    batch: int
    jit_compile: bool
    images_per_second: float


# The model-level comparison: (stem, input size, batch) of SASA-ResNet-26 vs its conv twin.
MODEL_CONFIGS = [("attention", 224, 8), ("attention_small", 32, 64)]


def measure_model(attention, stem, size, batch, jit_compile, repeats=3, **options):
    """Training images per second of ResNet-26: SASA (attention=True) or its conv baseline.

    `options` go to `SASAResNet26` (e.g. `base_width` for a small model)."""
    from keras_sasa.models import SASAResNet26

    if not attention:
        stem = stem.replace("attention", "conv")
    model = SASAResNet26(
        input_shape=(size, size, 3),
        classes=1000 if size >= 224 else 10,
        stem=stem,
        attention_stages=None if attention else (),
        **options,
    )
    model.compile(
        optimizer=keras.optimizers.SGD(0.01, momentum=0.9, nesterov=True),
        loss="sparse_categorical_crossentropy",
        jit_compile=jit_compile,
    )
    # As in `training.compile_model`: made inside the first traced step, the optimizer's
    # variables would make TensorFlow trace (and XLA compile) the warm-up step twice.
    model.optimizer.build(model.trainable_variables)
    x = tf.random.normal((batch, size, size, 3))
    y = tf.zeros((batch,), "int32")
    model.train_on_batch(x, y)  # trace and compile
    return batch / (_median_ms(lambda: model.train_on_batch(x, y), repeats) / 1000)


def run_models(configs=MODEL_CONFIGS, jit_modes=(False, True), repeats=3, log=print):
    results = []
    for stem, size, batch in configs:
        for jit_compile in jit_modes:
            for attention in (True, False):
                name = "sasa_resnet26" if attention else "conv_resnet26"
                rate = measure_model(attention, stem, size, batch, jit_compile, repeats)
                log(
                    f"{name:14} {size}x{size} batch {batch:3} jit={jit_compile!s:5} "
                    f"{rate:8.1f} img/s"
                )
                results.append(ModelResult(name, size, batch, jit_compile, rate))
    return results


def model_table(results):
    rows = [
        "| input | batch | jit | SASA-ResNet-26 img/s | conv ResNet-26 img/s | SASA / conv |",
        "|---|---|---|---|---|---|",
    ]
    by = {}
    for r in results:
        by.setdefault((r.input_size, r.batch, r.jit_compile), {})[r.model] = r
    for (size, batch, jit), pair in by.items():
        sasa, conv = pair["sasa_resnet26"], pair["conv_resnet26"]
        rows.append(
            f"| {size}x{size} | {batch} | {jit} | {sasa.images_per_second:.1f} | "
            f"{conv.images_per_second:.1f} | "
            f"{sasa.images_per_second / conv.images_per_second:.2f} |"
        )
    return "\n".join(rows)


def default_configs(quick=False):
    """(shape, kernel_size, dtype) triples: the group shapes, the kernel sizes, bfloat16."""
    if quick:
        return [((2, 28, 64), 7, "float32")]
    configs = [(shape, 7, "float32") for shape in GROUP_SHAPES]
    configs += [(GROUP_SHAPES[0], k, "float32") for k in KERNEL_SIZES if k != 7]
    configs.append((GROUP_SHAPES[0], 7, "bfloat16"))
    return configs


def run(configs, jit_modes=(False, True), repeats=3, log=print):
    results = []
    for shape, kernel_size, dtype in configs:
        for jit_compile in jit_modes:
            for contender in CONTENDERS:
                r = measure(contender, shape, kernel_size, jit_compile, dtype, repeats)
                log(
                    f"{str(shape):>16} k={kernel_size:<2} {dtype:8} jit={jit_compile!s:5} "
                    f"{contender:9} {r.milliseconds:9.1f} ms {r.peak_mib:9.1f} MiB"
                )
                results.append(r)
    return results


def machine_description():
    try:
        import jax

        jax_version = f", JAX {jax.__version__}"
    except ImportError:
        jax_version = ""
    return (
        f"{platform.machine()}, {os.cpu_count()} CPU cores, TensorFlow {tf.__version__}"
        f"{jax_version}, Keras {keras.__version__}, Python {platform.python_version()}"
    )


def markdown_table(results):
    """One row per (shape, kernel, dtype, jit): times, memory and the ratios."""
    rows = [
        "| input (B, H=W, C) | k | dtype | jit | fast ms | reference ms | conv3x3 ms "
        "| speed-up vs ref | x conv time | fast MiB | ref MiB | memory vs ref |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    groups = {}
    for r in results:
        if r.backend != "tensorflow":
            continue
        groups.setdefault((r.shape, r.kernel_size, r.dtype, r.jit_compile), {})[r.contender] = r
    for (shape, k, dtype, jit), by in groups.items():
        fast, ref, conv = by["auto"], by["reference"], by["conv3x3"]
        rows.append(
            f"| {shape} | {k} | {dtype} | {jit} | {fast.milliseconds:.1f} | "
            f"{ref.milliseconds:.1f} | {conv.milliseconds:.1f} | "
            f"{ref.milliseconds / fast.milliseconds:.1f}x | "
            f"{fast.milliseconds / conv.milliseconds:.1f}x | {fast.peak_mib:.0f} | "
            f"{ref.peak_mib:.0f} | {fast.peak_mib / max(ref.peak_mib, 1e-9):.2f} |"
        )
    return "\n".join(rows)


def plot(results, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for ax, jit in zip(axes, (False, True), strict=True):
        chosen = [
            r
            for r in results
            if r.jit_compile == jit and r.dtype == "float32" and r.backend == "tensorflow"
        ]
        labels = []
        for r in chosen:
            label = f"{r.shape[1]}x{r.shape[1]}x{r.shape[2]}\nk={r.kernel_size}"
            if label not in labels:
                labels.append(label)
        width = 0.27
        for i, contender in enumerate(CONTENDERS):
            values = [
                next(
                    r.milliseconds
                    for r in chosen
                    if r.contender == contender
                    and f"{r.shape[1]}x{r.shape[1]}x{r.shape[2]}\nk={r.kernel_size}" == label
                )
                for label in labels
            ]
            positions = [x + (i - 1) * width for x in range(len(labels))]
            ax.bar(positions, values, width, label=contender)
        ax.set_xticks(range(len(labels)), labels, fontsize=7)
        ax.set_yscale("log")
        ax.set_ylabel("ms per training step (forward + backward)")
        ax.set_title(f"LocalSelfAttention2D, jit_compile={jit}")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(results, markdown_path, png_path=None, extra=""):
    text = (
        "# keras-sasa benchmark\n\n"
        f"Machine: {machine_description()}.\n\n"
        "One training step of one layer (forward + backward, gradients of the input and of "
        "every weight), median of the timed repeats; `fast` is "
        '`LocalSelfAttention2D(implementation="auto")`, `reference` the extract_patches '
        'implementation, `conv3x3` `Conv2D(C, 3, padding="same")`. Memory is the peak of '
        "TensorFlow's allocator during the step, above what was allocated before it.\n\n"
        + markdown_table(results)
        + "\n"
        + (
            "\n## TensorFlow and JAX\n\nThe same steps under each Keras backend: TensorFlow "
            "as a graph (`TF`) and with XLA (`TF+XLA`), JAX under `jax.jit`.\n\n"
            + backend_table(results)
            + "\n"
            if any(r.backend == "jax" for r in results)
            else ""
        )
        + extra
    )
    with open(markdown_path, "w") as f:
        f.write(text)
    if png_path:
        plot(results, png_path)
    return text


def results_to_json(results):
    return json.dumps([dataclasses.asdict(r) for r in results], indent=1)
