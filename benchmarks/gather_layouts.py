"""The memory gather of the 8x56x56x64 layer (block 4, k = 7), forward + backward, three
layouts, interleaved: `sep` (k and v gathered apart, 8 channels per row: the blocked
path's), `cat` (k and v concatenated, one gather, then a split) and `heads` (all heads in
the channels, one gather, then a transpose). Prints the medians (ms); `python
benchmarks/gather_layouts.py 1` runs them under XLA.
"""

import time
import statistics
import numpy as np
import tensorflow as tf
import sys

Bt, N, D, nb, b, M = 8, 8, 8, 14, 4, 10
E = 2
P = (nb + E) * b
rows = np.arange(nb)[:, None] * b + np.arange(M)[None]
index = tf.constant((rows[:, None, :, None] * P + rows[None, :, None, :]).reshape(-1))
k = tf.random.normal((Bt * N, P * P, D))
v = tf.random.normal((Bt * N, P * P, D))
kc = tf.random.normal((Bt, P * P, N * D))
vc = tf.random.normal((Bt, P * P, N * D))
wk = tf.random.normal((Bt * N * nb * nb, M * M, D))
wv = tf.random.normal((Bt * N * nb * nb, M * M, D))


def sep(k, v):
    km = tf.reshape(tf.gather(k, index, axis=1), (-1, M * M, D))
    vm = tf.reshape(tf.gather(v, index, axis=1), (-1, M * M, D))
    return km, vm


def cat(k, v):
    kv = tf.gather(tf.concat([k, v], -1), index, axis=1)
    km, vm = tf.split(tf.reshape(kv, (-1, M * M, 2 * D)), 2, axis=-1)
    return km, vm


def heads(kc, vc):
    kv = tf.gather(tf.concat([kc, vc], -1), index, axis=1)  # (Bt, nb*nb*MM, 2*N*D)
    kv = tf.reshape(kv, (Bt, nb * nb * M * M, 2, N, D))
    kv = tf.transpose(kv, (2, 0, 3, 1, 4))
    kv = tf.reshape(kv, (2, -1, M * M, D))
    return kv[0], kv[1]


def mk(f, a, c):
    @tf.function(jit_compile=len(sys.argv) > 1)
    def step():
        with tf.GradientTape() as t:
            t.watch([a, c])
            km, vm = f(a, c)
            loss = tf.reduce_sum(km * wk) + tf.reduce_sum(vm * wv)
        return t.gradient(loss, [a, c])

    return step


fs = {"sep": mk(sep, k, v), "cat": mk(cat, k, v), "heads": mk(heads, kc, vc)}
for f in fs.values():
    [g.numpy() for g in f()]
t = {n: [] for n in fs}
for _ in range(7):
    for n, f in fs.items():
        s = time.perf_counter()
        [g.numpy() for g in f()]
        t[n].append(time.perf_counter() - s)
print({n: round(statistics.median(x) * 1000, 1) for n, x in t.items()})
