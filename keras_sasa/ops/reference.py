"""Local attention the literal way: every key and value copied k*k times into its
pixel's window. Slow and memory-hungry; it is the oracle the fast path is tested against
(Ramachandran et al. 2019, eq. 2-3, written as directly as the backend allows).

The windows come from `tf.image.extract_patches` on TensorFlow and from one gather on the
other backends. (`keras.ops.image.extract_patches` is a dense convolution with a
(k*k*C)^2 identity kernel, k*k*C times the work of a copy: it is never used.)
"""

import keras
import numpy as np
from keras import ops

from keras_sasa.ops._common import MASKED
from keras_sasa.ops._common import check_args
from keras_sasa.ops._common import logit_scale
from keras_sasa.ops._common import softmax_last
from keras_sasa.ops._common import split_query


def window_patches(x, kernel_size, dilation_rate):
    """(n, H, W, C) -> (n, H, W, k*k, C): every pixel's k x k window, zeros outside.

    Window positions in row-major order, centred on the pixel, spaced by `dilation_rate`.
    """
    k, d = kernel_size, dilation_rate
    shape = ops.shape(x)
    n, height, width, channels = shape[0], shape[1], shape[2], x.shape[3]
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        p = tf.image.extract_patches(
            x, sizes=[1, k, k, 1], strides=[1, 1, 1, 1], rates=[1, d, d, 1], padding="SAME"
        )
        return ops.reshape(p, (n, height, width, k * k, channels))
    # One gather from the zero-padded image (shapes are static outside TensorFlow).
    halo = d * (k // 2)
    x = ops.pad(x, [[0, 0], [halo, halo], [halo, halo], [0, 0]])
    offsets = np.arange(k) * d
    rows = np.arange(height)[:, None, None, None] + offsets[None, None, :, None]
    cols = np.arange(width)[None, :, None, None] + offsets[None, None, None, :]
    index = (rows * (width + 2 * halo) + cols).reshape(-1)
    patches = ops.take(ops.reshape(x, (n, -1, channels)), index, axis=1)
    return ops.reshape(patches, (n, height, width, k * k, channels))


def local_attention_reference(
    query,
    key,
    value,
    row_embeddings,
    column_embeddings,
    kernel_size,
    dilation_rate=1,
    border="mask",
    scale=None,
    return_attention_scores=False,
):
    """Local attention the literal way, on copied windows (the test oracle).

    Args:
        query, key: `(batch, height, width, num_heads, key_dim)` tensors.
        value: `(batch, height, width, num_heads, value_dim)` tensor.
        row_embeddings: `(kernel_size, num_heads, row_dim)` relative row table, or None
            for no positional term.
        column_embeddings: `(kernel_size, num_heads, key_dim - row_dim)` column table
            (None with `row_embeddings`).
        kernel_size: odd spatial extent k of the window.
        dilation_rate: spacing between window positions.
        border: `"mask"`: positions outside the image take no part in the softmax;
            `"zeros"`: they take part with zero keys and values.
        scale: multiplier of the logits; `None` means `1 / sqrt(key_dim)`.
        return_attention_scores: also return the weights,
            `(batch, height, width, num_heads, kernel_size * kernel_size)`, window positions
            in row-major order.

    Returns:
        `(batch, height, width, num_heads, value_dim)`, in the dtype of `value`.
    """
    check_args(kernel_size, dilation_rate, border)
    k, d = kernel_size, dilation_rate
    shape = ops.shape(query)
    batch, height, width = shape[0], shape[1], shape[2]
    num_heads, key_dim = query.shape[3], query.shape[4]
    value_dim = value.shape[4]

    def patches(x):
        n = ops.shape(x)[0]
        flat = ops.reshape(x, (n, height, width, x.shape[3] * x.shape[4]))
        p = window_patches(flat, k, d)
        return ops.reshape(p, (n, height, width, k * k, x.shape[3], x.shape[4]))

    q = ops.cast(query, "float32") * logit_scale(scale, key_dim)
    key_patches = patches(ops.cast(key, "float32"))
    logits = ops.einsum("bhwnd,bhwpnd->bhwnp", q, key_patches)
    if row_embeddings is not None:
        q_row, q_col = split_query(q, row_embeddings)
        row_logits = ops.einsum("bhwnd,knd->bhwnk", q_row, ops.cast(row_embeddings, "float32"))
        col_logits = ops.einsum("bhwnd,knd->bhwnk", q_col, ops.cast(column_embeddings, "float32"))
        rel = row_logits[..., :, None] + col_logits[..., None, :]
        logits += ops.reshape(rel, (batch, height, width, num_heads, k * k))
    if border == "mask":
        inside = patches(ops.ones((1, height, width, 1, 1)))[..., 0, 0]
        logits += (1.0 - inside[:, :, :, None, :]) * MASKED
    probs = softmax_last(logits)
    value_patches = patches(value)
    out = ops.einsum("bhwnp,bhwpnd->bhwnd", ops.cast(probs, value.dtype), value_patches)
    out = ops.reshape(out, (batch, height, width, num_heads, value_dim))
    if return_attention_scores:
        return out, probs
    return out
