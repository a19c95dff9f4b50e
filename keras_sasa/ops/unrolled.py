"""Local attention with the window unrolled into k*k shifted slices, in `keras.ops` only.

Ramachandran et al. 2019, eq. 2-3, written for export: the keys and values are padded once,
then every one of the k*k window offsets (a - i, b - j) is a plain 4-D slice of the padded
maps. No tensor has more than five dimensions, no matmul is batched over more than the
image, and there is no patch extraction, so the graph converts to TFLite's builtin op set
(PAD, SLICE, ADD, MUL, SUM, SELECT_V2, RESHAPE, PACK, SOFTMAX) and runs under every Keras
backend. It is exact (the same numbers as `local_attention_reference`) and returns the
attention weights on request. Its border mask is a select against the window centre's
logit (`_mask_border`), so that the logits keep a range int8 quantization can calibrate.
Its graph grows with k*k, one slice per window offset; speed against the blocked
implementation: docs/performance.md.
"""

from keras import ops

from keras_sasa.ops._common import MASK_MARGIN
from keras_sasa.ops._common import check_args
from keras_sasa.ops._common import logit_scale


def window_offsets(kernel_size):
    """The k*k (row, column) offsets of the window, row offset major, -(k//2) .. k//2."""
    half = kernel_size // 2
    return [(a, b) for a in range(-half, half + 1) for b in range(-half, half + 1)]


def _relative_vectors(row_embeddings, column_embeddings, kernel_size):
    """One flat (num_heads * key_dim,) float32 vector [r_a, c_b] per head, per window offset.

    q . k_ab + q . r_{a-i, b-j} = q . (k_ab + [r_a, c_b]), with the row part on the first
    row_dim channels of each head: adding the vector to the keys gives the relative logits
    without a second product against the query.
    """
    row = ops.cast(row_embeddings, "float32")
    column = ops.cast(column_embeddings, "float32")
    vectors = []
    for a in range(kernel_size):
        for b in range(kernel_size):
            vectors.append(ops.reshape(ops.concatenate([row[a], column[b]], axis=-1), (-1,)))
    return vectors


def local_attention_unrolled(
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
    """Local attention as a sum over the k*k window offsets (the export implementation).

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
        return_attention_scores: also return the float32 weights,
            `(batch, height, width, num_heads, kernel_size * kernel_size)`: entry
            `(a + k//2) * k + (b + k//2)` is the weight of the pixel at row offset `a` and
            column offset `b` (times `dilation_rate`), the order of `window_offsets` and of
            `local_attention_reference`. With `border="mask"` positions outside the image
            get exactly 0.

    Returns:
        `(batch, height, width, num_heads, value_dim)` in the dtype of `value`, and the
        weights if `return_attention_scores`.
    """
    check_args(kernel_size, dilation_rate, border)
    if (row_embeddings is None) != (column_embeddings is None):
        raise ValueError(
            "Arguments `row_embeddings` and `column_embeddings` must both be tensors or both "
            f"be None. Received: row_embeddings={row_embeddings!r}, "
            f"column_embeddings={column_embeddings!r}"
        )
    shape = ops.shape(query)
    batch, height, width = shape[0], shape[1], shape[2]
    num_heads, key_dim = query.shape[3], query.shape[4]
    value_dim = value.shape[4]
    scale = logit_scale(scale, key_dim)

    def flat(x, channels):
        return ops.reshape(x, (batch, height, width, channels))

    pad = (kernel_size // 2) * dilation_rate
    padding = ((0, 0), (pad, pad), (pad, pad), (0, 0))
    q = flat(ops.cast(query, "float32"), num_heads * key_dim) * scale
    keys = ops.pad(flat(ops.cast(key, "float32"), num_heads * key_dim), padding)
    values = ops.pad(flat(value, num_heads * value_dim), padding)
    # 1 inside the image, 0 in the padding: the border mask of every offset is a slice of it.
    inside = ops.pad(ops.ones_like(q[..., :1]), padding)

    def shifted(x, a, b):
        start = (0, pad + a * dilation_rate, pad + b * dilation_rate, 0)
        return ops.slice(x, start, (batch, height, width, x.shape[-1]))

    offsets = window_offsets(kernel_size)
    relative = (
        None
        if row_embeddings is None
        else _relative_vectors(row_embeddings, column_embeddings, kernel_size)
    )
    logits = []
    for p, (a, b) in enumerate(offsets):
        k_ab = shifted(keys, a, b)
        if relative is not None:
            k_ab = k_ab + relative[p]
        logits.append(
            ops.sum(ops.reshape(q * k_ab, (batch, height, width, num_heads, key_dim)), -1)
        )
    window = len(offsets)
    if border == "mask" and window > 1:
        logits = _mask_border(logits, [shifted(inside, a, b) for a, b in offsets])
    # Softmax over the window on a matrix: TFLite's and TF's CPU kernels take few dimensions.
    logits = ops.reshape(ops.stack(logits, axis=-1), (-1, window))
    # A one-position window (kernel_size 1) has weight 1; Keras warns on a size-1 softmax.
    probs = ops.ones_like(logits) if window == 1 else ops.softmax(logits, axis=-1)
    probs = ops.reshape(probs, (batch, height, width, num_heads, window))

    weights = ops.cast(probs, value.dtype)
    out = None
    for p, (a, b) in enumerate(offsets):
        v_ab = ops.reshape(shifted(values, a, b), (batch, height, width, num_heads, value_dim))
        term = weights[..., p : p + 1] * v_ab
        out = term if out is None else out + term
    if return_attention_scores:
        if border == "mask" and window > 1:
            # Exactly 0 outside the image (the values there are zeros, so the output needs
            # no such step).
            inside_all = ops.stack([shifted(inside, a, b)[..., 0] for a, b in offsets], -1)
            probs = probs * inside_all[:, :, :, None, :]
        return out, probs
    return out


def _mask_border(logits, inside):
    """The logits per window offset, with those outside the image (`inside` 0) set to the
    window centre's logit minus `MASK_MARGIN`.

    The centre is always inside, so a masked position weighs at most exp(-MASK_MARGIN) of
    it, whatever the logits' scale (unscaled logits too), and the masked logits stay in
    the range of the real ones: int8 quantization calibrates one scale over them. A select,
    not an added -1e9, for that reason.
    """
    centre = logits[len(logits) // 2] - MASK_MARGIN
    return [
        logit if p == len(logits) // 2 else ops.where(within > 0.5, logit, centre)
        for p, (logit, within) in enumerate(zip(logits, inside, strict=True))
    ]
