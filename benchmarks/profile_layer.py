"""Where one training step of LocalSelfAttention2D spends its time, by op family.

    python benchmarks/profile_layer.py [--implementation blocked] [--size 56 --channels 64]

Traces forward + backward (gradients of the input and of every weight) of one layer under
TensorFlow's profiler (graph mode, no XLA: XLA fuses the ops away) and sums the kernel time
of every op, grouped by family. Op times are summed over the executor's threads, so they
add up to more than the wall time; the shares are what to read. Writes
benchmarks/results/profile/<implementation>_<batch>x<size>x<size>x<channels>_k<k>.md.
"""

import argparse
import collections
import datetime
import glob
import os
import tempfile

import tensorflow as tf

from keras_sasa import benchmark
from keras_sasa.layers import LocalSelfAttention2D

ELEMENTWISE = ("Add", "Mul", "Sub", "Exp", "Select", "Neg", "Div", "Maximum", "Cast")
FAMILIES = [
    ("matmuls", ("MatMul", "Einsum", "Conv")),
    ("gather / scatter-add", ("Gather", "SegmentSum", "Scatter")),
    ("softmax (forward kernel)", ("Softmax",)),
    ("transposes and copies", ("Transpose", "Pad", "Slice", "Concat", "Split", "Tile")),
    ("reductions (sums)", ("Sum", "Max")),
    (
        "elementwise passes (add, mul, sub, exp, select)",
        ("Add", "Mul", "Sub", "Exp", "Select", "Neg", "Div", "Maximum", "Cast"),
    ),
]


def family(op_type):
    for name, keys in FAMILIES:
        if any(key in op_type for key in keys):
            return name
    return "other"


def training_step(batch, size, channels, kernel_size, implementation):
    layer = LocalSelfAttention2D(
        channels, kernel_size=kernel_size, num_heads=8, implementation=implementation
    )
    x = tf.random.normal((batch, size, size, channels))
    step = benchmark.layer_training_step(layer, x, jit_compile=False)
    step(x)  # trace
    return step, x


def op_times(step, x, steps):
    """{(op name, op type): milliseconds per step} from a profiler trace of `steps` steps."""
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    with tempfile.TemporaryDirectory() as logdir:
        tf.profiler.experimental.start(logdir)
        for _ in range(steps):
            [g.numpy() for g in step(x)]
        tf.profiler.experimental.stop()
        (path,) = glob.glob(os.path.join(logdir, "**", "*.xplane.pb"), recursive=True)
        space = xplane_pb2.XSpace()
        with open(path, "rb") as f:
            space.ParseFromString(f.read())
    times = collections.Counter()
    for plane in space.planes:
        for line in plane.lines:
            if not line.name.startswith("tf_Compute"):
                continue
            for event in line.events:
                meta = plane.event_metadata[event.metadata_id]
                if ":" in meta.name and meta.display_name:  # "scope/name:Type" kernels
                    times[(meta.name.split(":")[0], meta.display_name)] += (
                        event.duration_ps / 1e9 / steps
                    )
    return times


def report(times, title, top=25):
    total = sum(times.values())
    by_family = collections.Counter()
    for (_, op_type), ms in times.items():
        by_family[family(op_type)] += ms
    lines = [
        f"# {title}",
        "",
        f"Machine: {benchmark.machine_description()}; {datetime.date.today()}; shared cores.",
        "Kernel time per training step summed over the executor's threads "
        f"(total {total:.0f} ms; wall time is lower, ops run concurrently). "
        "Reproduce: `python benchmarks/profile_layer.py` (see its flags).",
        "",
        "| op family | ms per step | share |",
        "|---|---|---|",
    ]
    for name, ms in by_family.most_common():
        lines.append(f"| {name} | {ms:.1f} | {ms / total:.0%} |")
    lines += ["", f"Top {top} ops:", "", "| op | type | ms | share |", "|---|---|---|---|"]
    for (name, op_type), ms in times.most_common(top):
        lines.append(f"| `{name}` | {op_type} | {ms:.1f} | {ms / total:.0%} |")
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--implementation", choices=("auto", "blocked", "reference", "unrolled"), default="blocked"
    )
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=56)
    parser.add_argument("--channels", type=int, default=64)
    parser.add_argument("--kernel-size", type=int, default=7)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument(
        "--output-dir",
        default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "profile"),
    )
    args = parser.parse_args()
    step, x = training_step(
        args.batch, args.size, args.channels, args.kernel_size, args.implementation
    )
    [g.numpy() for g in step(x)]  # warm up
    times = op_times(step, x, args.steps)
    shape = f"{args.batch}x{args.size}x{args.size}x{args.channels}"
    title = (
        f"Profile: LocalSelfAttention2D training step, {shape}, k={args.kernel_size}, "
        f"8 heads, implementation={args.implementation!r}"
    )
    text = report(times, title)
    os.makedirs(args.output_dir, exist_ok=True)
    name = f"{args.implementation}_{shape}_k{args.kernel_size}.md"
    with open(os.path.join(args.output_dir, name), "w") as f:
        f.write(text)
    print(text)


if __name__ == "__main__":
    main()
