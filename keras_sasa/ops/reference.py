"""Local attention the literal way: every key and value copied k*k times by
`tf.image.extract_patches`. Slow and memory-hungry; it is the oracle the fast path is
tested against (Ramachandran et al. 2019, eq. 2-3, written as directly as TF allows).
"""

import tensorflow as tf

from keras_sasa.ops._common import MASKED
from keras_sasa.ops._common import check_args
from keras_sasa.ops._common import logit_scale
from keras_sasa.ops._common import softmax_last
from keras_sasa.ops._common import split_query


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
    """Local attention the literal way, on `tf.image.extract_patches` (the test oracle).

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
    shape = tf.shape(query)
    batch, height, width = shape[0], shape[1], shape[2]
    num_heads, key_dim = query.shape[3], query.shape[4]
    value_dim = value.shape[4]

    def patches(x):
        n = tf.shape(x)[0]
        flat = tf.reshape(x, [n, height, width, x.shape[3] * x.shape[4]])
        p = tf.image.extract_patches(
            flat, sizes=[1, k, k, 1], strides=[1, 1, 1, 1], rates=[1, d, d, 1], padding="SAME"
        )
        return tf.reshape(p, [n, height, width, k * k, x.shape[3], x.shape[4]])

    q = tf.cast(query, "float32") * logit_scale(scale, key_dim)
    key_patches = patches(tf.cast(key, "float32"))
    logits = tf.einsum("bhwnd,bhwpnd->bhwnp", q, key_patches)
    if row_embeddings is not None:
        q_row, q_col = split_query(q, row_embeddings)
        row_logits = tf.einsum("bhwnd,knd->bhwnk", q_row, tf.cast(row_embeddings, "float32"))
        col_logits = tf.einsum("bhwnd,knd->bhwnk", q_col, tf.cast(column_embeddings, "float32"))
        rel = row_logits[..., :, None] + col_logits[..., None, :]
        logits += tf.reshape(rel, [batch, height, width, num_heads, k * k])
    if border == "mask":
        inside = patches(tf.ones([1, height, width, 1, 1]))[..., 0, 0]
        logits += (1.0 - inside[:, :, :, None, :]) * MASKED
    probs = softmax_last(logits)
    value_patches = patches(value)
    out = tf.einsum("bhwnp,bhwpnd->bhwnd", tf.cast(probs, value.dtype), value_patches)
    out = tf.reshape(out, [batch, height, width, num_heads, value_dim])
    if return_attention_scores:
        return out, probs
    return out
