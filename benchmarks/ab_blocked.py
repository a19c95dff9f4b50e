"""Same-process A/B of the blocked path: before issue 15 (profile_layer.blocked_before) vs now.

    python benchmarks/ab_blocked.py [--shapes 56,28,14,7] [--rounds 7] [--jit both|off|on]

One training step of LocalSelfAttention2D (forward + backward, k=7, 8 heads, batch 8) per
contender: `main` (the blocked path before), `new` (the package's), `conv3x3` and, for
memory only, `reference` (extract_patches). The timed steps alternate between contenders,
round after round, and each time is the median over rounds, so load on the shared cores
falls on every contender alike. Writes benchmarks/results/issue15_ab.md.
"""

import argparse
import datetime
import os
import statistics
import sys
import time

import tensorflow as tf

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from profile_layer import blocked_implementation  # noqa: E402

from keras_sasa import benchmark  # noqa: E402

SIZES = {56: 64, 28: 128, 14: 256, 7: 512}


def step_fn(contender, batch, size, channels, jit_compile):
    impl = "main" if contender == "main" else "current"
    layer = benchmark._layer("auto" if contender in ("main", "new") else contender, channels, 7)
    x = tf.random.normal((batch, size, size, channels))
    step = benchmark.layer_training_step(layer, x, jit_compile)

    with blocked_implementation(impl):
        [g.numpy() for g in step(x)]  # trace and compile

    def run():
        for g in step(x):
            g.numpy()

    return run, step, x


def measure(size, jit_compile, rounds, batch=8):
    channels = SIZES[size]
    runs, peaks = {}, {}
    for contender in ("main", "new", "conv3x3", "reference"):
        run, step, x = step_fn(contender, batch, size, channels, jit_compile)
        peaks[contender] = benchmark._peak_mib(step, x)
        if contender != "reference":
            runs[contender] = run
    times = {c: [] for c in runs}
    for _ in range(rounds):
        for contender, run in runs.items():
            start = time.perf_counter()
            run()
            times[contender].append((time.perf_counter() - start) * 1000)
    return {c: statistics.median(t) for c, t in times.items()}, peaks


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", default="56,28,14,7")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--jit", choices=("both", "off", "on"), default="both")
    parser.add_argument(
        "--output",
        default=os.path.join(
            os.path.dirname(os.path.abspath(__file__)), "results", "issue15_ab.md"
        ),
    )
    args = parser.parse_args()
    rows = [
        "| shape (8, H, W, C) | jit | main ms | new ms | new / main | conv3x3 ms | main / conv "
        "| new / conv | main MiB | new MiB | reference MiB | main / ref | new / ref |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for size in [int(s) for s in args.shapes.split(",")]:
        for jit_compile in {"both": (False, True), "off": (False,), "on": (True,)}[args.jit]:
            ms, mib = measure(size, jit_compile, args.rounds)
            row = (
                f"| {size}x{size}x{SIZES[size]} | {jit_compile} | {ms['main']:.1f} | "
                f"{ms['new']:.1f} | {ms['new'] / ms['main']:.2f} | {ms['conv3x3']:.1f} | "
                f"{ms['main'] / ms['conv3x3']:.1f}x | {ms['new'] / ms['conv3x3']:.1f}x | "
                f"{mib['main']:.0f} | {mib['new']:.0f} | {mib['reference']:.0f} | "
                f"{mib['main'] / mib['reference']:.2f} | {mib['new'] / mib['reference']:.2f} |"
            )
            print(row, flush=True)
            rows.append(row)
    text = (
        "# Blocked path before and after issue 15, same process, interleaved\n\n"
        f"Machine: {benchmark.machine_description()}; {datetime.date.today()}; shared cores "
        f"(other jobs running). One training step of LocalSelfAttention2D (k=7, 8 heads, "
        f"batch 8), median of {args.rounds} interleaved rounds; memory is TensorFlow's "
        "allocator peak during one step. Reproduce: `python benchmarks/ab_blocked.py`.\n\n"
        + "\n".join(rows)
        + "\n"
    )
    with open(args.output, "w") as f:
        f.write(text)


if __name__ == "__main__":
    main()
