"""The blocked op's training step at 8x56x56x64 (k=7, 8 heads) by block size, interleaved.

    python benchmarks/block_sizes.py [--sizes 3,4,5,7,8] [--rounds 5] [--jit]

Forward + backward of `local_attention_blocked` with relative tables, the block sizes
alternating round after round, medians printed (ms).
"""

import argparse
import statistics
import time

import tensorflow as tf

from keras_sasa.ops import local_attention_blocked


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="3,4,5,7,8")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--jit", action="store_true")
    args = parser.parse_args()
    q, k, v = (tf.random.normal((8, 56, 56, 8, 8)) for _ in range(3))
    row, col = tf.random.normal((7, 8, 4)), tf.random.normal((7, 8, 4))
    steps = {}
    for block_size in [int(s) for s in args.sizes.split(",")]:

        @tf.function(jit_compile=args.jit)
        def step(block_size=block_size):
            with tf.GradientTape() as tape:
                tape.watch([q, k, v, row, col])
                y = local_attention_blocked(q, k, v, row, col, 7, block_size=block_size)
                loss = tf.reduce_sum(y * y)
            return tape.gradient(loss, [q, k, v, row, col])

        [g.numpy() for g in step()]
        steps[block_size] = step
    times = {b: [] for b in steps}
    for _ in range(args.rounds):
        for block_size, step in steps.items():
            start = time.perf_counter()
            [g.numpy() for g in step()]
            times[block_size].append((time.perf_counter() - start) * 1000)
    for block_size, t in times.items():
        print(f"block {block_size}: {statistics.median(t):.1f} ms", flush=True)


if __name__ == "__main__":
    main()
