"""The gradient of the blocked path's memory gather three ways, same process, interleaved.

    python benchmarks/fold_vs_scatter.py

The memory blocks of the 8x56x56x64 layer (64 images x heads, 14 x 14 blocks of 10 x 10
positions, 8 channels; block 4, k = 7) are summed back into the padded image: by the
gather's own gradient (a scatter-add, TF's UnsortedSegmentSum), by shifted slices, pads
and adds per axis (a fold), and by a 0/1 matmul per axis. Prints the medians (ms) without
and with XLA; the blocked path keeps the scatter-add (benchmarks/results/
implementation_notes.md).
"""

import statistics
import time

import numpy as np
import tensorflow as tf

G, NBH, NBW, B, MEM, C = 64, 14, 14, 4, 10, 8
EXTRA = -(-(MEM - B) // B)
PADDED = (NBH + EXTRA) * B


def by_scatter(u):
    rows = np.arange(NBH)[:, None] * B + np.arange(MEM)[None]
    index = (rows[:, None, :, None] * PADDED + rows[None, :, None, :]).reshape(-1)
    u = tf.transpose(tf.reshape(u, (G, -1, C)), (1, 0, 2))
    summed = tf.math.unsorted_segment_sum(u, index, PADDED * PADDED)
    return tf.reshape(tf.transpose(summed, (1, 0, 2)), (G, PADDED, PADDED, C))


def fold(x, axis):
    """(.., n, M, ..) at (axis, axis + 1) -> (.., (n + extra) * b, ..) by pads and adds."""
    shape = x.shape.as_list()
    total = None
    for j in range(EXTRA + 1):
        size = min(B, MEM - j * B)
        begin = [0] * len(shape)
        begin[axis + 1] = j * B
        sizes = list(shape)
        sizes[axis + 1] = size
        paddings = [[0, 0]] * len(shape)
        paddings[axis] = [j, EXTRA - j]
        paddings[axis + 1] = [0, B - size]
        chunk = tf.pad(tf.slice(x, begin, sizes), paddings)
        total = chunk if total is None else total + chunk
    return tf.reshape(total, shape[:axis] + [(shape[axis] + EXTRA) * B] + shape[axis + 2 :])


def by_fold(u):
    u = tf.transpose(tf.reshape(u, (G, NBH, NBW, MEM, MEM, C)), (0, 1, 3, 2, 4, 5))
    return fold(fold(u, 3), 1)


def fold_matrix(n):
    f = np.zeros((n, MEM, (n + EXTRA) * B), "float32")
    for i in range(n):
        f[i, np.arange(MEM), i * B + np.arange(MEM)] = 1.0
    return tf.constant(f.reshape(n * MEM, -1))


def by_matmul(u):
    u = tf.transpose(tf.reshape(u, (G, NBH, NBW, MEM, MEM, C)), (0, 1, 3, 5, 2, 4))
    u = tf.reshape(u, (-1, NBW * MEM)) @ fold_matrix(NBW)
    u = tf.transpose(tf.reshape(u, (G, NBH * MEM, C, PADDED)), (0, 2, 3, 1))
    u = tf.reshape(u, (-1, NBH * MEM)) @ fold_matrix(NBH)
    return tf.transpose(tf.reshape(u, (G, C, PADDED, PADDED)), (0, 3, 2, 1))


def main(rounds=7):
    blocks = tf.random.normal((G * NBH * NBW, MEM * MEM, C))
    for jit_compile in (False, True):
        fns = {
            f.__name__: tf.function(f, jit_compile=jit_compile)
            for f in (by_scatter, by_fold, by_matmul)
        }
        expected = fns["by_scatter"](blocks).numpy()
        for fn in fns.values():
            np.testing.assert_allclose(fn(blocks).numpy(), expected, atol=1e-5)
        times = {name: [] for name in fns}
        for _ in range(rounds):
            for name, fn in fns.items():
                start = time.perf_counter()
                fn(blocks).numpy()
                times[name].append((time.perf_counter() - start) * 1000)
        medians = ", ".join(f"{n} {statistics.median(t):.1f} ms" for n, t in times.items())
        print(f"jit_compile={jit_compile}: {medians}")


if __name__ == "__main__":
    main()
