"""Exact local attention by blocks of queries, in `keras.ops` (every backend).

The queries are cut into b x b blocks; each block attends to its (b + k - 1)^2 memory
block (the block plus a halo of k // 2) in one batched matmul, and the keys outside each
query's own k x k window are masked. The relative logits and the masks are separable over
rows and columns, so they are computed per axis and added in one fused softmax. Dilation
runs through a space-to-batch reshape: a dilated window is a plain window on each of the
dilation**2 interleaved sub-grids. The blocked layout follows tensor2tensor's 2-D local
attention and timm's HaloAttn, with the exact per-query window of the paper.

The attention of each block has a hand-written gradient (`_attend`) in the form flash
attention uses: the softmax weights are recomputed in the backward pass instead of kept,
and the softmax's correction term comes from the output, so the backward pass holds one
fewer block-logits-sized tensor and makes one fewer pass over it.

Spatial sizes may be unknown on TensorFlow (graph tensors); every shape is read with
`ops.shape` and only the head and channel sizes must be static.
"""

import numpy as np
from keras import ops

from keras_sasa.ops._common import MASKED
from keras_sasa.ops._common import check_args
from keras_sasa.ops._common import logit_scale


def _pad_to(x, axis, before, total):
    """Zero-pads `x` along `axis` with `before` in front and up to length `total`."""
    size = ops.shape(x)[axis]
    paddings = [[0, 0]] * len(x.shape)
    paddings[axis] = [before, total - size - before]
    return ops.pad(x, paddings)


def _take(x, axis, start, size):
    """`size` entries of `x` from `start` along `axis`: a slice, whose gradient on
    TensorFlow is a pad (a strided slice's gradient is a scatter)."""
    starts = [0] * len(x.shape)
    starts[axis] = start
    # Sizes spelled out: the PyTorch backend takes no -1 for "the rest".
    sizes = list(ops.shape(x))
    sizes[axis] = size
    return ops.slice(x, starts, sizes)


def _blocks_with_halo(x, axis, num_blocks, block_size, memory_size):
    """Overlapping windows of `memory_size` starting every `block_size` along `axis`.

    `x` must already be padded to at least (num_blocks + extra) * block_size along `axis`;
    returns x with `axis` replaced by (num_blocks, memory_size). Built from reshapes,
    slices and a concat, whose gradients are pads.
    """
    extra = -(-(memory_size - block_size) // block_size)
    shape = list(ops.shape(x))
    pieces = []
    for j in range(extra + 1):
        start = j * block_size
        piece = _take(x, axis, start, num_blocks * block_size)
        new_shape = shape[:axis] + [num_blocks, block_size] + shape[axis + 1 :]
        pieces.append(ops.reshape(piece, new_shape))
    joined = ops.concatenate(pieces, axis=axis + 1) if len(pieces) > 1 else pieces[0]
    return _take(joined, axis + 1, 0, memory_size)


def _offset_tables(row_table, col_table):
    """(k, N, Dr) and (k, N, Dc) -> (N, Dr + Dc, 2k): one matmul gives both axes' logits.

    Each head's query is [row part | column part]; the row table is zero on the column part
    and the other way round.
    """
    row_dim, col_dim = row_table.shape[-1], col_table.shape[-1]
    rows = ops.pad(row_table, [[0, 0], [0, 0], [0, col_dim]])
    cols = ops.pad(col_table, [[0, 0], [0, 0], [row_dim, 0]])
    return ops.transpose(ops.concatenate([rows, cols], axis=0), (1, 2, 0))


def _skew(offsets, memory_size):
    """(..., b, k) logits per offset -> (..., b, M): entry [i, m] = offsets[i, m - i].

    Pairs outside the window (m - i outside 0..k-1) get 0; they are masked anyway. The
    shift comes from padding each row to M + 1 and reading the rows back M wide.
    """
    lead = list(ops.shape(offsets)[:-2])
    b, k = offsets.shape[-2], offsets.shape[-1]
    padded = ops.pad(offsets, [[0, 0]] * (len(offsets.shape) - 1) + [[0, memory_size + 1 - k]])
    flat = ops.reshape(padded, lead + [b * (memory_size + 1)])
    flat = _take(flat, len(lead), 0, b * memory_size)
    return ops.reshape(flat, lead + [b, memory_size])


def _window_bias(block_size, kernel_size):
    """(b, M) float32: 0 where memory position m is in the window of block position i."""
    memory_size = block_size + kernel_size - 1
    offsets = np.arange(memory_size)[None, :] - np.arange(block_size)[:, None]
    inside = (offsets >= 0) & (offsets < kernel_size)
    return np.where(inside, 0.0, MASKED).astype("float32")


def default_block_size(height, width, kernel_size):
    """Edge of the query blocks used by `local_attention_blocked` when none is given.

    Each query of a b x b block scores (b + k - 1)^2 keys instead of its k^2, so small
    blocks waste less; but tiny blocks make tiny matmuls, whose fixed cost the model
    below charges per block. For known sizes a block that tiles the image without
    padding is preferred among near-equal choices. How the choice compares with
    measured times: docs/design.md.
    """
    sizes = [s for s in (height, width) if s is not None]

    def cost(b):
        padded = 1.0
        for s in sizes:
            padded *= -(-s // b) * b / s
        # Keys scored per query, plus a per-block overhead of about 6 queries' worth.
        return padded * ((b + kernel_size - 1) ** 2 + 6.0 * (b + kernel_size - 1) ** 2 / (b * b))

    return min(range(3, 9), key=cost)


def _space_to_grids(x, d):
    """(B, H, W, C) -> (d * d * B, ceil(H / d), ceil(W / d), C), zero-padded: the d*d
    interleaved sub-grids, grid g = row offset * d + column offset, batch minor (the
    layout of tf.space_to_batch)."""
    shape = ops.shape(x)
    batch, height, width, channels = shape[0], shape[1], shape[2], x.shape[3]
    rows, cols = (height + d - 1) // d, (width + d - 1) // d
    x = ops.pad(x, [[0, 0], [0, rows * d - height], [0, cols * d - width], [0, 0]])
    x = ops.reshape(x, (batch, rows, d, cols, d, channels))
    x = ops.transpose(x, (2, 4, 0, 1, 3, 5))
    return ops.reshape(x, (d * d * batch, rows, cols, channels))


def _grids_to_space(x, d, height, width):
    """The inverse of `_space_to_grids`, cropped back to height x width."""
    shape = ops.shape(x)
    rows, cols, channels = shape[1], shape[2], x.shape[3]
    x = ops.reshape(x, (d, d, -1, rows, cols, channels))
    x = ops.transpose(x, (2, 3, 0, 4, 1, 5))
    x = ops.reshape(x, (-1, rows * d, cols * d, channels))
    return _take(_take(x, 1, 0, height), 2, 0, width)


def local_attention_blocked(
    query,
    key,
    value,
    row_embeddings,
    column_embeddings,
    kernel_size,
    dilation_rate=1,
    border="mask",
    scale=None,
    block_size=None,
):
    """Exact local attention by blocks of queries; same arguments as the reference.

    `block_size` is the edge of the query blocks (default: `default_block_size`).
    Returns `(batch, height, width, num_heads, value_dim)` in the dtype of `value`.
    """
    check_args(kernel_size, dilation_rate, border)
    if block_size is None:
        block_size = default_block_size(query.shape[1], query.shape[2], kernel_size)
    d = dilation_rate
    shape = ops.shape(query)
    batch, height, width = shape[0], shape[1], shape[2]

    q = ops.cast(query, "float32") * logit_scale(scale, query.shape[4])
    tensors = [q, ops.cast(key, "float32"), value]
    # Which rows / columns of each sub-grid are real pixels (grid g = row offset * d +
    # column offset).
    offsets = ops.arange(d)
    rows = ops.arange((height + d - 1) // d)
    cols = ops.arange((width + d - 1) // d)
    row_inside = ops.repeat(offsets[:, None] + rows[None, :] * d < height, d, axis=0)
    col_inside = ops.tile(offsets[:, None] + cols[None, :] * d < width, (d, 1))
    if d > 1:
        # A dilated window is a plain window on each of the d*d interleaved sub-grids.
        def to_grids(x):
            channels = int(np.prod(x.shape[3:]))
            grids = _space_to_grids(ops.reshape(x, (batch, height, width, channels)), d)
            sub = ops.shape(grids)
            return ops.reshape(grids, (sub[0], sub[1], sub[2], *x.shape[3:]))

        tensors = [to_grids(t) for t in tensors]
    out = _blocked_core(
        *tensors,
        row_inside,
        col_inside,
        None if row_embeddings is None else ops.cast(row_embeddings, "float32"),
        None if column_embeddings is None else ops.cast(column_embeddings, "float32"),
        kernel_size,
        border,
        block_size,
    )
    if d > 1:
        sub = ops.shape(out)
        flat = ops.reshape(out, (sub[0], sub[1], sub[2], int(np.prod(value.shape[3:]))))
        flat = _grids_to_space(flat, d, height, width)
        out = ops.reshape(flat, (batch, height, width, *value.shape[3:]))
    return out


def _blocked_core(q, k, v, row_inside, col_inside, row_table, col_table, kernel_size, border, b):
    """Blocked attention over (grids * batch, H, W, N, D) tensors, undilated.

    `row_inside` (grids, H) and `col_inside` (grids, W) flag the real pixels of each grid.
    """
    qb, km, vm, row_term, col_term = _to_blocks(
        q, k, v, row_inside, col_inside, row_table, col_table, kernel_size, border, b
    )
    out = _attend(qb, km, vm, row_term, col_term, bias_grad=row_table is not None)
    return _from_blocks(out, q, b)


def _probs(qb, km, row_term, col_term):
    """Softmax weights (X, b*b, M*M), float32, of the biased block logits."""
    logits = ops.einsum("xqd,xmd->xqm", qb, km)  # (X, b*b, M*M)
    return _biased_softmax(logits, row_term, col_term)


def _selectors(mem):
    """(M*M, 2M) float32 0/1 matrix: logits (M*M,) @ it = [row sums (M,), column sums (M,)]."""
    rows, cols = np.divmod(np.arange(mem * mem), mem)
    out = np.zeros((mem * mem, 2 * mem), "float32")
    out[np.arange(mem * mem), rows] = 1.0
    out[np.arange(mem * mem), mem + cols] = 1.0
    return out


def _attend(qb, km, vm, row_term, col_term, bias_grad):
    """softmax(qb km^T + row_term + col_term) vm, with a hand-written gradient.

    The gradient is the softmax's in its flash-attention form: sum_m p_m dp_m, the term
    every logit's gradient subtracts, equals dout . out, a sum over the value channels
    instead of over the M*M memory positions. The weights are recomputed in the backward
    pass rather than stored from the forward one, so no (X, b*b, M*M) tensor outlives
    either pass. The bias terms get their gradients (sums of the logits' gradient over
    the other axis) only when they carry relative logits (`bias_grad`); masks alone are
    constants.
    """

    @ops.custom_gradient
    def attend(qb, km, vm, row_term, col_term):
        out = ops.matmul(ops.cast(_probs(qb, km, row_term, col_term), vm.dtype), vm)

        def grad(*args, upstream=None):
            dout = args[0] if upstream is None else upstream
            probs = _probs(qb, km, row_term, col_term)
            dprobs = ops.cast(ops.einsum("xqv,xmv->xqm", dout, vm), "float32")
            delta = ops.sum(
                ops.cast(dout, "float32") * ops.cast(out, "float32"), axis=-1, keepdims=True
            )
            dlogits = probs * (dprobs - delta)  # (X, b*b, M*M)
            dqb = ops.einsum("xqm,xmd->xqd", dlogits, km)
            dkm = ops.einsum("xqm,xqd->xmd", dlogits, qb)
            dvm = ops.einsum("xqm,xqv->xmv", ops.cast(probs, vm.dtype), dout)
            if bias_grad:
                # Row and column sums of each query's M x M logits as one matmul against
                # 0/1 selectors, one pass; TF's CPU reduction over a middle axis is slow.
                mem = col_term.shape[-1]
                sums = ops.matmul(
                    ops.reshape(dlogits, (-1, mem * mem)), ops.convert_to_tensor(_selectors(mem))
                )
                drow, dcol = ops.split(sums, 2, axis=-1)
                drow = ops.reshape(drow, ops.shape(row_term))
                dcol = ops.reshape(dcol, ops.shape(col_term))
            else:
                drow, dcol = ops.zeros_like(row_term), ops.zeros_like(col_term)
            return dqb, dkm, dvm, drow, dcol

        return out, grad

    return attend(qb, km, vm, row_term, col_term)


def _to_blocks(q, k, v, row_inside, col_inside, row_table, col_table, kernel_size, border, b):
    """Query blocks, memory blocks and the per-axis logit terms.

    Returns qb (X, b*b, D), km (X, M*M, D), vm (X, M*M, Dv), row_term (X, b, b, M, 1) and
    col_term (X, b, b, 1, M), X = grids * batch * heads * blocks. Heads go into the batch,
    so that every block of every head is one small matmul.
    """
    shape = ops.shape(q)
    gb, height, width = shape[0], shape[1], shape[2]
    grids = ops.shape(row_inside)[0]
    num_heads, key_dim = q.shape[3], q.shape[4]
    halo = kernel_size // 2
    mem = b + kernel_size - 1
    nbh = (height + b - 1) // b
    nbw = (width + b - 1) // b
    extra = -(-(mem - b) // b)

    def heads_first(x):  # (gb, H, W, N, D) -> (gb * N, H, W, D)
        x = ops.transpose(x, (0, 3, 1, 2, 4))
        return ops.reshape(x, (-1, height, width, x.shape[-1]))

    # Queries: (G, nbh, b, nbw, b, D) -> (G * nbh * nbw, b * b, D), rows major.
    qb = _pad_to(_pad_to(heads_first(q), 1, 0, nbh * b), 2, 0, nbw * b)
    qb = ops.reshape(qb, (-1, nbh, b, nbw, b, key_dim))
    qb = ops.reshape(ops.transpose(qb, (0, 1, 3, 2, 4, 5)), (-1, b * b, key_dim))

    def halo_blocks(x, axis, num_blocks):
        x = _pad_to(x, axis, halo, (num_blocks + extra) * b)
        return _blocks_with_halo(x, axis, num_blocks, b, mem)

    # Memory blocks by one gather from the padded image: a single copy forward, a single
    # scatter-add backward, where slices and concats would make one pass each.
    padded_width = (nbw + extra) * b
    rows = ops.arange(nbh)[:, None] * b + ops.arange(mem)[None, :]  # (nbh, M)
    cols = ops.arange(nbw)[:, None] * b + ops.arange(mem)[None, :]  # (nbw, M)
    index = ops.reshape(rows[:, None, :, None] * padded_width + cols[None, :, None, :], (-1,))

    def memory(x):  # (G, H, W, C) -> (G * nbh * nbw, M * M, C)
        x = _pad_to(heads_first(x), 1, halo, (nbh + extra) * b)
        x = _pad_to(x, 2, halo, padded_width)
        x = ops.take(ops.reshape(x, (ops.shape(x)[0], -1, x.shape[-1])), index, axis=1)
        return ops.reshape(x, (-1, mem * mem, x.shape[-1]))

    # Per-axis terms (X, b_row, b_col, M): relative logits plus the window and border
    # masks, all separable over rows and columns. Tiled, not broadcast: TF (when this
    # runs without XLA) broadcasts at most 5 alternating dimensions.
    window = ops.convert_to_tensor(_window_bias(b, kernel_size))  # (b, M)
    bn = gb // grids * num_heads

    def axis_bias(inside, num_blocks):  # -> (grids, blocks, b, M)
        if border == "zeros":
            return ops.tile(window[None, None], (grids, num_blocks, 1, 1))
        blocks = halo_blocks(ops.cast(inside, "float32"), 1, num_blocks)
        return window[None, None] + ((1.0 - blocks) * MASKED)[:, :, None, :]

    row_term = ops.reshape(axis_bias(row_inside, nbh), (grids, 1, nbh, 1, b, 1, mem))
    row_term = ops.tile(row_term, (1, bn, 1, nbw, 1, b, 1))
    col_term = ops.reshape(axis_bias(col_inside, nbw), (grids, 1, 1, nbw, 1, b, mem))
    col_term = ops.tile(col_term, (1, bn, nbh, 1, b, 1, 1))
    if row_table is not None:
        # Relative logits per offset (k per axis), then shifted into the memory positions.
        queries = ops.reshape(qb, (gb, num_heads, nbh * nbw * b * b, key_dim))
        # Tables broadcast by hand: TF 2.21's batched matmul gives wrong numbers (and
        # corrupts memory) when it broadcasts a batch of 1 head against several
        # (tensorflow/tensorflow#117700; reproduced by tests/test_tf_workarounds.py).
        tables = ops.broadcast_to(
            _offset_tables(row_table, col_table), (gb, num_heads, key_dim, 2 * kernel_size)
        )
        offsets = ops.matmul(queries, tables)  # (gb, N, blocks * b * b, 2k)
        offsets = ops.reshape(offsets, (-1, b, b, 2 * kernel_size))
        row_rel, col_rel = ops.split(offsets, 2, axis=-1)  # (X, b_row, b_col, k)
        row_rel = ops.transpose(_skew(ops.transpose(row_rel, (0, 2, 1, 3)), mem), (0, 2, 1, 3))
        row_term += ops.reshape(row_rel, ops.shape(row_term))
        col_term += ops.reshape(_skew(col_rel, mem), ops.shape(col_term))
    row_term = ops.reshape(row_term, (-1, b, b, mem, 1))
    col_term = ops.reshape(col_term, (-1, b, b, 1, mem))
    return qb, memory(k), memory(v), row_term, col_term


def _biased_softmax(logits, row_term, col_term):
    _, b, _, _, mem = col_term.shape
    logits = ops.reshape(logits, (-1, b, b, mem, mem)) + row_term + col_term
    probs = ops.softmax(ops.reshape(logits, (-1, mem * mem)), axis=-1)
    return ops.reshape(probs, (-1, b * b, mem * mem))


def _from_blocks(out, q, b):
    """(X, b*b, Dv) block outputs -> (batch, H, W, N, Dv), the layout of the queries `q`.

    Only the shape of `q` is read.
    """
    shape = ops.shape(q)
    height, width, num_heads, value_dim = shape[1], shape[2], q.shape[3], out.shape[-1]
    nbh = (height + b - 1) // b
    nbw = (width + b - 1) // b
    out = ops.reshape(out, (-1, nbh, nbw, b, b, value_dim))
    out = ops.transpose(out, (0, 1, 3, 2, 4, 5))
    out = ops.reshape(out, (-1, num_heads, nbh * b, nbw * b, value_dim))
    out = _take(_take(out, 2, 0, height), 3, 0, width)
    out = ops.transpose(out, (0, 2, 3, 1, 4))
    # A reshape that changes nothing but restores the static head and channel sizes.
    return ops.reshape(out, (-1, height, width, num_heads, value_dim))
