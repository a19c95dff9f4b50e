"""Same-process A/B of the blocked path under JAX: before issue 15 vs now.

    KERAS_BACKEND=jax python benchmarks/ab_jax.py [--shapes 56,28] [--rounds 5]

One training step of LocalSelfAttention2D (k=7, 8 heads, batch 8) under `jax.jit`, the
steps alternating between `main` (profile_layer.blocked_before) and `new`, medians over
rounds. Writes benchmarks/results/issue15_ab_jax.md.
"""

import argparse
import datetime
import os
import statistics
import sys
import time

os.environ.setdefault("KERAS_BACKEND", "jax")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from profile_layer import blocked_implementation  # noqa: E402

from keras_sasa import benchmark  # noqa: E402

SIZES = {56: 64, 28: 128, 14: 256, 7: 512}


def step_fn(impl, size, batch=8):
    layer = benchmark._layer("auto", SIZES[size], 7)
    x = jax.random.normal(jax.random.key(0), (batch, size, size, SIZES[size]))
    layer.build(x.shape)
    trainable = [v.value for v in layer.trainable_variables]
    frozen = [v.value for v in layer.non_trainable_variables]

    def loss(trainable, x):
        y, _ = layer.stateless_call(trainable, frozen, x)
        return jnp.mean(y * y)

    step = jax.jit(jax.grad(loss, argnums=(0, 1)))
    with blocked_implementation(impl):
        jax.block_until_ready(step(trainable, x))  # trace and compile
    return lambda: jax.block_until_ready(step(trainable, x))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", default="56,28")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--output",
        default=os.path.join(
            os.path.dirname(os.path.abspath(__file__)), "results", "issue15_ab_jax.md"
        ),
    )
    args = parser.parse_args()
    rows = ["| shape (8, H, W, C) | main ms | new ms | new / main |", "|---|---|---|---|"]
    for size in [int(s) for s in args.shapes.split(",")]:
        runs = {impl: step_fn(impl, size) for impl in ("main", "current")}
        times = {impl: [] for impl in runs}
        for _ in range(args.rounds):
            for impl, run in runs.items():
                start = time.perf_counter()
                run()
                times[impl].append((time.perf_counter() - start) * 1000)
        main_ms, new_ms = (statistics.median(times[i]) for i in ("main", "current"))
        shape = f"{size}x{size}x{SIZES[size]}"
        row = f"| {shape} | {main_ms:.1f} | {new_ms:.1f} | {new_ms / main_ms:.2f} |"
        print(row, flush=True)
        rows.append(row)
    text = (
        "# Blocked path before and after issue 15 under JAX, same process, interleaved\n\n"
        f"Machine: {benchmark.machine_description()}; {datetime.date.today()}; shared cores "
        f"(other jobs running). One training step under `jax.jit`, median of {args.rounds} "
        "interleaved rounds. Reproduce: `python benchmarks/ab_jax.py`.\n\n" + "\n".join(rows) + "\n"
    )
    with open(args.output, "w") as f:
        f.write(text)


if __name__ == "__main__":
    main()
