"""The accelerator run (`python -m keras_sasa bench --accelerator`): every visible GPU or
TPU, or the CPU without one, at the four group shapes of ResNet-50, a SASA-ResNet-26
training step against the conv ResNet-26, and the blocked path's block sizes at 56 x 56.
Writes one markdown report per device (`benchmarks/results/<device>.md`).
"""

import json
import os
import subprocess
import sys

import tensorflow as tf

from keras_sasa.benchmark import GROUP_SHAPES
from keras_sasa.benchmark import ModelResult
from keras_sasa.benchmark import _median_ms
from keras_sasa.benchmark import machine_description
from keras_sasa.benchmark import measure
from keras_sasa.benchmark import measure_model
from keras_sasa.benchmark import model_table
from keras_sasa.benchmark import run_in_backend

# The accelerator run: the layer at the four group shapes and one model step, per device.
ACCELERATOR_MODEL = ("conv", 224, 8)
# Block edges tried at 56x56 beside the default: 4 is what `default_block_size` picks (the
# fewest keys scored per query on CPU); 7 and 8 give 3-4x larger matmuls per block, which
# an accelerator may run at the same cost, trading wasted logits for fewer, larger ops.
ACCELERATOR_BLOCK_SIZES = (4, 7, 8)


def accelerators():
    """[(backend, device name)] of the GPUs and TPUs TensorFlow and JAX can see."""
    found = []
    for gpu in tf.config.list_physical_devices("GPU"):
        details = tf.config.experimental.get_device_details(gpu)
        found.append(("tensorflow", details.get("device_name", gpu.name)))
    try:
        import jax

        found += [("jax", d.device_kind) for d in jax.devices() if d.platform != "cpu"]
    except (ImportError, RuntimeError):
        pass
    return found


def _file_name(device):
    return "".join(c if c.isalnum() else "_" for c in device.lower()).strip("_") or "device"


def _block_size_rows(size, channels, block_sizes, repeats, jit_compile):
    """Forward + backward ms of `local_attention_blocked` at each block size (TF)."""
    from keras_sasa.ops import local_attention_blocked

    q, k, v = (tf.random.normal((8, size, size, 8, channels // 8)) for _ in range(3))
    row = tf.random.normal((7, 8, channels // 16))
    col = tf.random.normal((7, 8, channels // 8 - channels // 16))
    rows = [f"| block size | ms (fwd + bwd, jit={jit_compile}) |", "|---|---|"]
    for block_size in block_sizes:

        @tf.function(jit_compile=jit_compile)
        def step(q, k, v, row, col, block_size=block_size):
            with tf.GradientTape() as tape:
                tape.watch([q, k, v, row, col])
                y = local_attention_blocked(q, k, v, row, col, 7, block_size=block_size)
                loss = tf.reduce_sum(y * y)
            return tape.gradient(loss, [q, k, v, row, col])

        def run(step=step):
            for g in step(q, k, v, row, col):
                g.numpy()

        run()
        rows.append(f"| {block_size} | {_median_ms(run, repeats):.2f} |")
    return "\n".join(rows)


def run_accelerators(
    output_dir,
    shapes=GROUP_SHAPES,
    model=ACCELERATOR_MODEL,
    jit_modes=(False, True),
    repeats=5,
    log=print,
    model_options=None,
):
    """Measures every visible accelerator; without one, the CPU. Writes
    `output_dir/<device>.md` per device and returns the paths.

    Per device: the layer (`auto`, k=7) against Conv2D 3x3 at `shapes` in `jit_modes`
    (TensorFlow; JAX always runs under `jax.jit`), a SASA-ResNet-26 training step against
    the conv ResNet-26 at `model` = (stem, input size, batch), and on TensorFlow the blocked
    op at each of `ACCELERATOR_BLOCK_SIZES` at the first shape (with XLA if in
    `jit_modes`). `model_options` go to `SASAResNet26`.
    """
    model_options = model_options or {}
    devices = accelerators() or [("tensorflow", "cpu")]
    configs = [(shape, 7, "float32") for shape in shapes]
    stem, size, batch = model
    paths = []
    for backend, device in devices:
        log(f"measuring {device} ({backend})")
        if backend == "jax":
            code = (
                "import json, sys\n"
                "from keras_sasa import benchmark\n"
                "print(json.dumps([benchmark.measure_model(a, *json.loads(sys.argv[1]), True, "
                "int(sys.argv[2])) for a in (True, False)]))\n"
            )
            layer = run_in_backend("jax", configs, repeats, log=log)
            layer = [r for r in layer if r.contender != "reference"]
            out = subprocess.run(
                [sys.executable, "-c", code, json.dumps([stem, size, batch]), str(repeats)],
                env={**os.environ, "KERAS_BACKEND": "jax"},
                capture_output=True,
                text=True,
                check=True,
            )
            rates = json.loads(out.stdout.strip().splitlines()[-1])
            models = [
                ModelResult(name, size, batch, True, rate)
                for name, rate in zip(("sasa_resnet26", "conv_resnet26"), rates, strict=True)
            ]
            blocks = ""
        else:
            layer = [
                measure(contender, shape, 7, jit, "float32", repeats)
                for shape in shapes
                for jit in jit_modes
                for contender in ("auto", "conv3x3")
            ]
            models = [
                ModelResult(
                    "sasa_resnet26" if attention else "conv_resnet26",
                    size,
                    batch,
                    jit,
                    measure_model(attention, stem, size, batch, jit, repeats, **model_options),
                )
                for jit in jit_modes
                for attention in (True, False)
            ]
            first = shapes[0]
            blocks = (
                f"\nThe blocked op alone at {first} (k=7, 8 heads) by block size; the layer "
                "uses `default_block_size`:\n\n"
                + _block_size_rows(
                    first[1], first[2], ACCELERATOR_BLOCK_SIZES, repeats, max(jit_modes)
                )
                + "\n"
            )
        text = "\n".join(
            [
                f"# keras-sasa on {device} ({backend})",
                "",
                f"Machine: {machine_description()}. Written by "
                "`python -m keras_sasa bench --accelerator`.",
                "",
                "One training step of LocalSelfAttention2D (k=7, 8 heads, `auto`) and of "
                "Conv2D 3x3, median of the timed repeats:",
                "",
                "| input (B, H=W, C) | jit | attention ms | conv3x3 ms | attention / conv |",
                "|---|---|---|---|---|",
                *_accelerator_rows(layer),
                "",
                "A training step of SASA-ResNet-26 against the conv ResNet-26, images per "
                f"second ({stem} stem, {size}x{size}, batch {batch}):",
                "",
                model_table(models),
                blocks,
            ]
        )
        os.makedirs(output_dir, exist_ok=True)
        path = os.path.join(output_dir, f"{_file_name(device)}.md")
        with open(path, "w") as f:
            f.write(text)
        log(text)
        paths.append(path)
    return paths


def _accelerator_rows(results):
    by = {}
    for r in results:
        by.setdefault((r.shape, r.jit_compile), {})[r.contender] = r
    return [
        f"| {shape} | {jit} | {pair['auto'].milliseconds:.2f} | "
        f"{pair['conv3x3'].milliseconds:.2f} | "
        f"{pair['auto'].milliseconds / pair['conv3x3'].milliseconds:.2f} |"
        for (shape, jit), pair in by.items()
    ]
