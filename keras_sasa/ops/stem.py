"""The attention stem's math: attention with spatially-aware values, as plain tensor functions.

Ramachandran et al., "Stand-Alone Self-Attention in Vision Models" (NeurIPS 2019), §3.2 and
Appendix A.1. RGB pixels carry little content on their own, so plain self-attention makes a
poor stem; the paper injects position into the values instead: the value of a pixel is
computed with a mixture of value matrices whose weights depend on where the pixel sits in
the window,

    y_ij = sum_ab softmax_ab(s * q_ij . k_ab) v_ab,
    v_ab = (sum_m p(a, b, m) W_V^m) x_ab,
    p(a, b, m) = softmax_m((emb_row(a) + emb_col(b)) . nu_m).

The functions here own no weights; `keras_sasa.layers.AttentionStem2D` wraps them.

Names: `query` and `key` are the projected tensors q = W_Q x and k = W_K x, split into
heads, `(batch, height, width, num_heads, key_dim)`; `kernel_size` is the window's edge
(the paper's spatial extent k). Windows (`window`):
- `"block"`: the image is cut into kernel_size x kernel_size blocks starting at the
  top-left corner; every pixel attends to the pixels of its own block, and (a, b) is the
  position of the value inside the block (the paper's ImageNet stem).
- `"sliding"`: every pixel ij attends to the kernel_size x kernel_size window at row and
  column offsets `sliding_window_offsets(kernel_size)` around it, and (a, b) is the position
  of the value inside that window.
Either way, positions outside the image take no part in the softmax.

Precision: logits, masks and both softmaxes are float32; the projections and the weighted
sum of values run in the dtype of `inputs`.
"""

import math

from keras import ops

from keras_sasa import _validation as check
from keras_sasa.ops._common import MASKED
from keras_sasa.ops._common import select_masked
from keras_sasa.ops._common import softmax_last

WINDOWS = ("block", "sliding")


def sliding_window_offsets(kernel_size):
    """Row (and column) offsets a - i of a sliding window, like `Conv2D(padding="same")`.

    `-((kernel_size - 1) // 2) .. kernel_size // 2`: centred for an odd size; an even size
    reaches one pixel further down and right (4: offsets -1, 0, 1, 2).
    """
    first = -((kernel_size - 1) // 2)
    return list(range(first, first + kernel_size))


def mixture_weights(row_embeddings, column_embeddings, mixture_embeddings):
    """The paper's p(a, b, m) = softmax_m((emb_row(a) + emb_col(b)) . nu_m), in float32.

    Args:
        row_embeddings, column_embeddings: `(kernel_size, dim)` tables, one entry per row
            (column) position in the window.
        mixture_embeddings: `(num_mixtures, dim)`, the vectors nu_m.

    Returns:
        `(kernel_size, kernel_size, num_mixtures)` float32 weights summing to 1 over m.
    """
    row = ops.cast(row_embeddings, "float32")
    column = ops.cast(column_embeddings, "float32")
    position = row[:, None, :] + column[None, :, :]
    logits = ops.einsum("abd,md->abm", position, ops.cast(mixture_embeddings, "float32"))
    return softmax_last(logits)


def attention_stem(
    inputs,
    query_kernel,
    key_kernel,
    value_kernels,
    row_embeddings,
    column_embeddings,
    mixture_embeddings,
    num_heads,
    kernel_size,
    window="block",
    scale=None,
    select_mask=False,
):
    """The attention stem from its weights: projections, mixture weights and attention.

    Args:
        inputs: `(batch, height, width, channels)` images.
        query_kernel, key_kernel: `(channels, filters)`, W_Q and W_K (no biases).
        value_kernels: `(num_mixtures, channels, filters)`, the W_V^m.
        row_embeddings, column_embeddings: `(kernel_size, dim)` emb_row and emb_col.
        mixture_embeddings: `(num_mixtures, dim)`, the nu_m.
        num_heads: number of heads; must divide `filters`.
        kernel_size: edge of the window.
        window: `"block"` or `"sliding"` (module docstring).
        scale: multiplier of the logits; `None` means `1 / sqrt(filters // num_heads)`.
        select_mask: see `spatially_aware_attention`.

    Returns:
        `(batch, height, width, num_heads, filters // num_heads)`, in the dtype of `inputs`.
    """
    filters = query_kernel.shape[-1]
    kernel = ops.cast(ops.concatenate([query_kernel, key_kernel], axis=-1), inputs.dtype)
    query, key = ops.split(ops.matmul(inputs, kernel), 2, axis=-1)
    shape = ops.shape(inputs)
    heads = (shape[0], shape[1], shape[2], num_heads, filters // num_heads)
    mixture = mixture_weights(row_embeddings, column_embeddings, mixture_embeddings)
    return spatially_aware_attention(
        ops.reshape(query, heads),
        ops.reshape(key, heads),
        inputs,
        value_kernels,
        mixture,
        kernel_size,
        window=window,
        scale=scale,
        select_mask=select_mask,
    )


def spatially_aware_attention(
    query,
    key,
    inputs,
    value_kernels,
    mixture,
    kernel_size,
    window="block",
    scale=None,
    select_mask=False,
):
    """Attention whose values are mixed per window position, from projected queries and keys.

    Args:
        query, key: `(batch, height, width, num_heads, key_dim)`.
        inputs: `(batch, height, width, channels)`: the x of v = (sum_m p W_V^m) x.
        value_kernels: `(num_mixtures, channels, num_heads * value_dim)`: the W_V^m.
        mixture: `(kernel_size, kernel_size, num_mixtures)` weights p(a, b, m), see
            `mixture_weights`.
        kernel_size: edge of the window.
        window: `"block"` or `"sliding"` (module docstring).
        scale: multiplier of the logits; `None` means `1 / sqrt(key_dim)`.
        select_mask: how window positions outside the image leave the softmax. False
            (training): MASKED is added to their logits. True (inference and export):
            their logits are replaced by the query's own logit minus `MASK_MARGIN`, which
            keeps the logits' range for int8 quantization (docs/serving.md); their values
            are zeros either way.

    Returns:
        `(batch, height, width, num_heads, value_dim)`, in the dtype of `inputs`.
    """
    check.one_of("window", window, WINDOWS)
    key_dim = query.shape[-1]
    scale = 1.0 / math.sqrt(key_dim) if scale is None else float(scale)
    query = ops.cast(query, "float32") * scale
    key = ops.cast(key, "float32")
    # One value matrix per window position: sum_m p(a, b, m) W_V^m, (k*k, channels, F).
    kernels = ops.einsum("abm,mcf->abcf", mixture, ops.cast(value_kernels, "float32"))
    kernels = ops.reshape(kernels, (kernel_size * kernel_size, *value_kernels.shape[1:]))
    kernels = ops.cast(kernels, inputs.dtype)
    attend = _block_attention if window == "block" else _sliding_attention
    return attend(query, key, inputs, kernels, kernel_size, select_mask)


def _block_attention(query, key, inputs, kernels, kernel_size, select_mask):
    """Attention inside the kernel_size x kernel_size blocks of the image (Appendix A.1).

    Tensors stay within 6 dimensions and products within rank 4, so that the graph
    converts to TFLite's builtin ops.
    """
    shape = ops.shape(query)
    batch, height, width = shape[0], shape[1], shape[2]
    num_heads, key_dim = query.shape[3], query.shape[4]
    value_dim = kernels.shape[-1] // num_heads
    area = kernel_size * kernel_size
    rows = (height + kernel_size - 1) // kernel_size
    cols = (width + kernel_size - 1) // kernel_size

    def blocks(x):
        # (n, H, W, C) -> (n * rows * cols, k*k, C), padding the image to whole blocks.
        channels = x.shape[3]
        x = ops.pad(
            x, [[0, 0], [0, rows * kernel_size - height], [0, cols * kernel_size - width], [0, 0]]
        )
        x = ops.reshape(x, (ops.shape(x)[0], rows, kernel_size, cols, kernel_size, channels))
        x = ops.transpose(x, (0, 1, 3, 2, 4, 5))
        return ops.reshape(x, (-1, area, channels))

    def by_head(x, dim):  # (n, k*k, N * dim) -> (n, N, k*k, dim)
        return ops.transpose(ops.reshape(x, (-1, area, num_heads, dim)), (0, 2, 1, 3))

    def flat(x):
        return ops.reshape(x, (batch, height, width, num_heads * key_dim))

    query_blocks = by_head(blocks(flat(query)), key_dim)
    key_blocks = by_head(blocks(flat(key)), key_dim)
    logits = ops.einsum("xnpd,xnqd->xnpq", query_blocks, key_blocks)  # (B*rows*cols, N, k*k, k*k)
    inside = blocks(ops.ones((1, height, width, 1), "float32"))  # (rows * cols, k*k, 1)
    logits = ops.reshape(logits, (batch, rows * cols, num_heads, area, area))
    if select_mask:
        # Each query's logit against its own key.
        own = ops.sum(query_blocks * key_blocks, axis=-1)
        own = ops.reshape(own, (batch, rows * cols, num_heads, area, 1))
        inside = ops.reshape(inside > 0.5, (1, rows * cols, 1, 1, area))
        logits = select_masked(logits, inside, own)
    else:
        logits = logits + ops.reshape((1.0 - inside) * MASKED, (1, rows * cols, 1, 1, area))
    probs = ops.cast(softmax_last(logits), inputs.dtype)
    probs = ops.reshape(probs, (-1, num_heads, area, area))

    # The value at block position p uses its own mixed matrix kernels[p].
    values = ops.einsum("xpc,pcf->xpf", blocks(inputs), kernels)
    out = ops.matmul(probs, by_head(values, value_dim))  # (B * rows * cols, N, k*k, Dv)
    out = ops.reshape(
        ops.transpose(out, (0, 2, 1, 3)), (batch, rows, cols, kernel_size, kernel_size, -1)
    )
    out = ops.transpose(out, (0, 1, 3, 2, 4, 5))
    out = ops.reshape(out, (batch, rows * kernel_size, cols * kernel_size, num_heads, value_dim))
    return out[:, :height, :width]


def _sliding_attention(query, key, inputs, kernels, kernel_size, select_mask):
    """Attention over the window around every pixel, from shifted slices.

    Tensors stay within 5 dimensions and products within rank 4 (TFLite builtins).
    """
    shape = ops.shape(query)
    batch, height, width = shape[0], shape[1], shape[2]
    num_heads, key_dim = query.shape[3], query.shape[4]
    value_dim = kernels.shape[-1] // num_heads
    area = kernel_size * kernel_size
    before = -sliding_window_offsets(kernel_size)[0]
    after = kernel_size - 1 - before
    positions = [(a, b) for a in range(kernel_size) for b in range(kernel_size)]

    def pad(x):
        return ops.pad(x, [[0, 0], [before, after], [before, after], [0, 0]])

    def shifted(x, a, b):  # window row a, column b: offsets (a - before, b - before)
        return x[:, a : a + height, b : b + width]

    def windows(x):
        # (n, H + k - 1, W + k - 1, C) -> (n, H, W, k*k, C): the k*k shifted copies.
        return ops.stack([shifted(x, a, b) for a, b in positions], axis=3)

    key_windows = windows(pad(ops.reshape(key, (batch, height, width, num_heads * key_dim))))
    key_windows = ops.reshape(key_windows, (-1, area, num_heads, key_dim))
    queries = ops.reshape(query, (-1, num_heads, key_dim))
    logits = ops.einsum("xnd,xpnd->xnp", queries, key_windows)
    outside = 1.0 - windows(pad(ops.ones((1, height, width, 1), "float32")))  # (1, H, W, k*k, 1)
    logits = ops.reshape(logits, (batch, height * width, num_heads, area))
    if select_mask:
        # The window position at offset (0, 0): the pixel's own key.
        own = before * kernel_size + before
        centre = logits[:, :, :, own : own + 1]
        inside = ops.reshape(outside < 0.5, (1, height * width, 1, area))
        logits = select_masked(logits, inside, centre)
    else:
        logits = logits + ops.reshape(outside * MASKED, (1, height * width, 1, area))
    probs = ops.cast(softmax_last(logits), inputs.dtype)
    # Every pixel's value under each of the k*k window positions' matrices, then for
    # window position p the neighbour's value under matrix p.
    all_values = ops.einsum("bhwc,pcf->bhwpf", pad(inputs), kernels)
    values = [shifted(all_values, a, b)[:, :, :, a * kernel_size + b] for a, b in positions]
    values = ops.reshape(ops.stack(values, axis=3), (-1, area, num_heads, value_dim))
    probs = ops.reshape(probs, (-1, num_heads, area))
    out = ops.einsum("xnp,xpnd->xnd", probs, values)
    return ops.reshape(out, (batch, height, width, num_heads, value_dim))
