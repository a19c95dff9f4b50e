"""Exact local attention by blocks of queries, in `keras.ops` (every backend).

The queries are cut into b x b blocks; each block attends to its (b + k - 1)^2 memory
block (the block plus a halo of k // 2) in one batched matmul, and the keys outside each
query's own k x k window are masked. The relative logits and the masks are separable over
rows and columns, so they are computed per axis and added in one fused softmax. Dilation
runs through a space-to-batch reshape: a dilated window is a plain window on each of the
dilation**2 interleaved sub-grids. The blocked layout follows tensor2tensor's 2-D local
attention and timm's HaloAttn, with the exact per-query window of the paper.

The whole attention, from the (batch, height, width, heads, channels) tensors to the
output, has one hand-written gradient (`_attention`), in the form flash attention uses:
the softmax weights are recomputed in the backward pass instead of kept, and the
softmax's correction term comes from the output, so the backward pass holds one fewer
block-logits-sized tensor and makes one fewer pass over it. Being hand-written, the
backward pass is also short: the blocking, the gather, the masks and the relative logits
put no gradient ops of their own in the graph, which keeps the first training step's
tracing (`benchmarks/trace_time.py`) near a convolution's.

Everything that depends only on the shapes (the masks, the gather and shift indices) is
built in NumPy at trace time, once per shape, and enters the graph as a constant. Spatial
sizes may be unknown on TensorFlow (graph tensors): then the same code builds those
tensors with `keras.ops`. Only the head and channel sizes must be static.
"""

import functools

import keras
import numpy as np
from keras import ops

from keras_sasa import _validation as check
from keras_sasa.ops._common import MASKED
from keras_sasa.ops._common import check_args
from keras_sasa.ops._common import logit_scale
from keras_sasa.ops._common import select_masked
from keras_sasa.ops._common import shape as _shape


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


# Above this many bytes of logits per image, `_attention_select` attends the heads in
# groups, and one head's blocks in bands of block rows. The graphs ONNX Runtime, LiteRT
# and TensorFlow run make about ten passes over the logits, each a separate op over the
# whole tensor; chunks small enough to stay in the core's cache through them (a 2 MiB L2
# here) run them up to 1.5x faster (docs/serving.md, `benchmarks/attention_chunks.py`).
CHUNK_BYTES = 512 * 1024


def default_chunks(height, width, kernel_size, num_heads, dilation_rate=1, block_size=None):
    """`(head_groups, row_bands)` that `local_attention_blocked(select_mask=True)` cuts the
    attention into when none are given: the fewest groups of heads (a divisor of
    `num_heads`) whose float32 logits per image hold at most `CHUNK_BYTES`, and where one
    head's exceed it, the fewest bands of block rows that do; `(1, 1)` where the height
    or width is unknown (None)."""
    if not (isinstance(height, int) and isinstance(width, int)):
        return 1, 1
    if block_size is None:
        block_size = default_block_size(height, width, kernel_size)
    blocks = _Blocks(height, width, dilation_rate, block_size, kernel_size, "mask")
    return _default_chunks(blocks, num_heads)


def _default_chunks(blocks, num_heads):
    """`default_chunks` of the blocks of one image (sizes as tensors: one chunk)."""
    if not blocks.static:
        return 1, 1
    per_head = blocks.d**2 * blocks.nbh * blocks.nbw * (blocks.b * blocks.mem) ** 2 * 4
    for groups in (n for n in range(1, num_heads + 1) if num_heads % n == 0):
        if per_head * num_heads <= groups * CHUNK_BYTES:
            return groups, 1
    return num_heads, min(blocks.nbh, -(-per_head // CHUNK_BYTES))


def _space_to_grids(x, d):
    """(B, H, W, C) -> (d * d * B, ceil(H / d), ceil(W / d), C), zero-padded: the d*d
    interleaved sub-grids, grid g = row offset * d + column offset, batch minor (the
    layout of tf.space_to_batch)."""
    shape = _shape(x)
    batch, height, width, channels = shape[0], shape[1], shape[2], x.shape[3]
    rows, cols = (height + d - 1) // d, (width + d - 1) // d
    x = ops.pad(x, [[0, 0], [0, rows * d - height], [0, cols * d - width], [0, 0]])
    x = ops.reshape(x, (batch, rows, d, cols, d, channels))
    x = ops.transpose(x, (2, 4, 0, 1, 3, 5))
    return ops.reshape(x, (d * d * batch, rows, cols, channels))


def _grids_to_space(x, d, height, width):
    """The inverse of `_space_to_grids`, cropped back to height x width."""
    shape = _shape(x)
    rows, cols, channels = shape[1], shape[2], x.shape[3]
    x = ops.reshape(x, (d, d, -1, rows, cols, channels))
    x = ops.transpose(x, (2, 3, 0, 4, 1, 5))
    x = ops.reshape(x, (-1, rows * d, cols * d, channels))
    return ops.slice(x, (0, 0, 0, 0), (_shape(x)[0], height, width, channels))


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
    select_mask=False,
    head_groups=None,
    row_bands=None,
):
    """Exact local attention by blocks of queries; same arguments as the reference.

    `block_size` is the edge of the query blocks (default: `default_block_size`).

    `head_groups`, `row_bands` (with `select_mask` only): the heads are attended in
    `head_groups` groups (a divisor of the heads), and each group's query blocks in
    `row_bands` bands of block rows, one chunk after the other, so that each chunk's
    logits stay in the CPU's cache through the passes over them (default:
    `default_chunks`; bands need known spatial sizes).

    `select_mask` picks how the keys outside each query's window leave the softmax:

    - False (default, what training runs): MASKED (-1e9) is added to their logits, and the
      gradient is the hand-written one of `_attention`.
    - True (what inference and the exports run, `_attention_select`): their logits are
      replaced by the window centre's logit minus `MASK_MARGIN`, as the unrolled
      implementation does, their weights are then set to 0, and the gradient is left to
      automatic differentiation. The logits keep the range of the real ones: ONNX
      Runtime's Softmax runs several times slower on rows holding logits far below their
      maximum (docs/serving.md), and int8 quantization calibrates on that range.

    Returns `(batch, height, width, num_heads, value_dim)` in the dtype of `value`.
    """
    check_args(kernel_size, dilation_rate, border)
    if block_size is None:
        block_size = default_block_size(query.shape[1], query.shape[2], kernel_size)
    d = dilation_rate
    shape = _shape(query)
    batch, height, width = shape[0], shape[1], shape[2]

    q = ops.cast(query, "float32") * logit_scale(scale, query.shape[4])
    tensors = [q, ops.cast(key, "float32"), value]
    if d > 1:
        # A dilated window is a plain window on each of the d*d interleaved sub-grids.
        def to_grids(x):
            channels = int(np.prod(x.shape[3:]))
            grids = _space_to_grids(ops.reshape(x, (batch, height, width, channels)), d)
            sub = _shape(grids)
            return ops.reshape(grids, (sub[0], sub[1], sub[2], *x.shape[3:]))

        tensors = [to_grids(t) for t in tensors]
    if row_embeddings is not None:
        tensors += [ops.cast(row_embeddings, "float32"), ops.cast(column_embeddings, "float32")]
    blocks = _Blocks(height, width, d, block_size, kernel_size, border)
    if select_mask:
        num_heads = query.shape[3]
        groups, bands = _default_chunks(blocks, num_heads)
        groups = groups if head_groups is None else head_groups
        bands = bands if row_bands is None else row_bands
        check.positive_int("head_groups", groups, type_error=ValueError)
        if num_heads % groups:
            expected = f"Expected a divisor of the number of heads, {num_heads}"
            raise check.error("head_groups", groups, expected)
        check.positive_int("row_bands", bands, type_error=ValueError)
        if bands > 1 and not (blocks.static and bands <= blocks.nbh):
            rows = blocks.nbh if blocks.static else "unknown"
            expected = f"Expected at most the query blocks' rows ({rows}) and known sizes"
            raise check.error("row_bands", bands, expected)
        out = _attention_select(blocks, *tensors, groups=groups, bands=bands)
    else:
        out = _attention(blocks, *tensors)
    if d > 1:
        sub = _shape(out)
        flat = ops.reshape(out, (sub[0], sub[1], sub[2], int(np.prod(value.shape[3:]))))
        flat = _grids_to_space(flat, d, height, width)
        out = ops.reshape(flat, (batch, height, width, *value.shape[3:]))
    return out


class _Blocks:
    """How each of the d*d sub-grids of a height x width image is cut into b x b query
    blocks and their M x M memory blocks (M = b + k - 1), and the layout changes between
    the images and the blocks.

    Images are (G, rows, cols, N, C), G = d*d*batch (grid major); blocks are
    (X, b*b, C) for queries and (X, M*M, C) for memory, X = G * N * nbh * nbw (grid,
    batch, head, block row, block column). Shape-only tensors are NumPy constants when
    the sizes are ints, `keras.ops` tensors otherwise.
    """

    def __init__(self, height, width, dilation, block_size, kernel_size, border):
        d, b, k = dilation, block_size, kernel_size
        self.static = isinstance(height, int) and isinstance(width, int)
        self.height, self.width, self.d, self.b, self.k = height, width, d, b, k
        self.border = border
        self.halo = k // 2
        self.mem = b + k - 1
        self.rows, self.cols = (height + d - 1) // d, (width + d - 1) // d
        self.nbh, self.nbw = (self.rows + b - 1) // b, (self.cols + b - 1) // b
        # The padded image holds every memory block: the halo on both sides.
        self.padded_rows = self.nbh * b + k - 1
        self.padded_cols = self.nbw * b + k - 1

    def _const(self, builder, *args, part=None):
        """`builder(xp, *args)`: cached NumPy for static sizes, else keras.ops tensors.
        `part`: an index into the NumPy array (static sizes only)."""
        if not self.static:
            return builder(ops, *args)
        out = _numpy_cache(builder, args)
        if part is not None:
            out = out[part]
        if isinstance(out, tuple):
            return tuple(ops.convert_to_tensor(x) for x in out)
        return ops.convert_to_tensor(out)

    def queries(self, x):
        """(G, rows, cols, N, C) -> (X, b*b, C), zero-padded to whole blocks."""
        b, num_heads, channels = self.b, x.shape[3], x.shape[4]
        x = self._pad_queries(x)
        x = ops.reshape(x, (-1, self.nbh, b, self.nbw, b, num_heads, channels))
        x = ops.transpose(x, (0, 5, 1, 3, 2, 4, 6))
        return ops.reshape(x, (-1, b * b, channels))

    def _pad_queries(self, x):
        more_rows, more_cols = self.nbh * self.b - self.rows, self.nbw * self.b - self.cols
        if not self.static or more_rows or more_cols:
            x = ops.pad(x, [[0, 0], [0, more_rows], [0, more_cols], [0, 0], [0, 0]])
        return x

    def query_rows(self, x):
        """Inference: (G, rows, cols, N, C) -> (G, N, nbh * b, nbw * b, C), zero-padded to
        whole blocks; `band_queries` cuts the blocks of a band of block rows from it."""
        return ops.transpose(self._pad_queries(x), (0, 3, 1, 2, 4))

    def band_queries(self, x, band=None):
        """(X_band, b*b, C) from `query_rows`'s tensor: the blocks of block rows
        `band = (first, end)` (None: all), in two transposes of at most 5 dimensions
        (TFLite's builtin Transpose takes no more)."""
        b, channels = self.b, x.shape[4]
        if band is not None:
            x = x[:, :, band[0] * b : band[1] * b]
        x = ops.reshape(x, (-1, b, self.nbw, b * channels))
        x = ops.transpose(x, (0, 2, 1, 3))  # (G * N * band rows, nbw, b, b * C)
        return ops.reshape(x, (-1, b * b, channels))

    def images(self, blocks, num_heads):
        """The inverse of `queries`: (X, b*b, C) -> (G, rows, cols, N, C)."""
        b, channels = self.b, blocks.shape[-1]
        x = ops.reshape(blocks, (-1, num_heads, self.nbh, self.nbw, b, b, channels))
        x = ops.transpose(x, (0, 2, 4, 3, 5, 1, 6))
        x = ops.reshape(x, (-1, self.nbh * b, self.nbw * b, num_heads, channels))
        if self.static and self.nbh * b == self.rows and self.nbw * b == self.cols:
            return x
        sizes = (_shape(x)[0], self.rows, self.cols, num_heads, channels)
        return ops.slice(x, (0, 0, 0, 0, 0), sizes)

    def band_images(self, blocks, num_heads, band=None):
        """The inverse of `band_queries`: (X_band, b*b, C) -> (G, band rows * b, nbw * b,
        N, C); the bands' images, concatenated in order, go to `crop`."""
        b, channels = self.b, blocks.shape[-1]
        block_rows = self.nbh if band is None else band[1] - band[0]
        x = ops.reshape(blocks, (-1, self.nbw, b, b * channels))
        x = ops.transpose(x, (0, 2, 1, 3))  # (G * N * band rows, b, nbw, b * C)
        x = ops.reshape(x, (-1, num_heads, block_rows * b, self.nbw * b, channels))
        return ops.transpose(x, (0, 2, 3, 1, 4))

    def crop(self, x):
        """Inference: (G, nbh * b, nbw * b, N, C) -> (G, rows, cols, N, C)."""
        if self.static and self.nbh * self.b == self.rows and self.nbw * self.b == self.cols:
            return x
        if self.static:
            # A slice of static bounds: no Shape op for the batch in the exported graphs.
            return x[:, : self.rows, : self.cols]
        sizes = (_shape(x)[0], self.rows, self.cols, x.shape[3], x.shape[4])
        return ops.slice(x, (0, 0, 0, 0, 0), sizes)

    def _memory_index(self, band=None):
        part = None
        if band is not None:
            per_row = self.nbw * self.mem * self.mem
            part = slice(band[0] * per_row, band[1] * per_row)
        args = (self.nbh, self.nbw, self.b, self.mem, self.padded_cols)
        return self._const(_memory_index, *args, part=part)

    def memory(self, x):
        """(G, rows, cols, N, C) -> (X, M*M, C): one gather from the padded image (a
        single copy forward, a single scatter-add backward)."""
        return self.band_memory(self.padded_memory(x))

    def band_memory(self, x, band=None):
        """`padded_memory`'s tensor -> (X_band, M*M, C): the memory blocks of block rows
        `band = (first, end)` (None: all)."""
        x = _gather(x, self._memory_index(band), axis=1)
        return ops.reshape(x, (-1, self.mem * self.mem, x.shape[-1]))

    def padded_memory(self, x):
        """(G, rows, cols, N, C) -> (G * N, padded rows * padded cols, C): the image with
        its halo, flattened, which `memory` gathers the memory blocks from."""
        halo, channels = self.halo, x.shape[4]
        x = ops.transpose(x, (0, 3, 1, 2, 4))
        x = ops.pad(
            x,
            [
                [0, 0],
                [0, 0],
                [halo, self.padded_rows - self.rows - halo],
                [halo, self.padded_cols - self.cols - halo],
                [0, 0],
            ],
        )
        return ops.reshape(x, (-1, self.padded_rows * self.padded_cols, channels))

    def memory_gradient(self, grad, num_heads):
        """The gradient of `memory`: (X, M*M, C) -> (G, rows, cols, N, C), the scatter-add
        of the gather over the block positions (rows of G*C values, as TensorFlow's own
        gather gradient makes them)."""
        channels = grad.shape[-1]
        per_image = self.nbh * self.nbw * self.mem * self.mem
        grad = ops.transpose(ops.reshape(grad, (-1, per_image, channels)), (1, 0, 2))
        padded = self.padded_rows * self.padded_cols
        grad = ops.segment_sum(grad, self._memory_index(), num_segments=padded)
        grad = ops.reshape(grad, (self.padded_rows, self.padded_cols, -1, num_heads, channels))
        sizes = (self.rows, self.cols, _shape(grad)[2], num_heads, channels)
        grad = ops.slice(grad, (self.halo, self.halo, 0, 0, 0), sizes)
        return ops.transpose(grad, (2, 0, 1, 3, 4))

    def masks(self, per_block=False):
        """Row and column logit bias, float32: 0 where the key is in the query's window
        (and, with border "mask", in the image), MASKED elsewhere. Shaped to add to the
        (d*d, batch * N, P, M, M) logits (P = nbh * nbw * b * b): (d*d, 1, P, M, 1) and
        (d*d, 1, P, 1, M); or, `per_block`, both (d*d, 1, nbh * nbw, 1, b*b * M)."""
        args = (self.height, self.width, self.d, self.nbh, self.nbw, self.b, self.k)
        return self._const(_masks, *args, self.border == "mask", per_block)

    def inside(self, band=None):
        """(d*d, 1, nbh * nbw, b*b, M*M) bool: whether each memory position is in each
        block query's window (and, with border "mask", in the image); `band`: only the
        blocks of block rows (first, end) (None: all)."""
        args = (self.height, self.width, self.d, self.nbh, self.nbw, self.b, self.k)
        part = None
        if band is not None:
            part = (slice(None), slice(None), slice(band[0] * self.nbw, band[1] * self.nbw))
        return self._const(_inside, *args, self.border == "mask", part=part)


@functools.lru_cache(maxsize=256)
def _numpy_cache(builder, args):
    out = builder(np, *args)
    for array in out if isinstance(out, tuple) else (out,):
        array.flags.writeable = False
    return out


def _memory_index(xp, nbh, nbw, b, mem, padded_cols):
    """(nbh * nbw * M * M,) int32: where memory position (i, j) of block (r, c) lies in
    the flattened padded image, blocks major."""
    rows = xp.arange(nbh)[:, None] * b + xp.arange(mem)[None, :]  # (nbh, M)
    cols = xp.arange(nbw)[:, None] * b + xp.arange(mem)[None, :]  # (nbw, M)
    index = rows[:, None, :, None] * padded_cols + cols[None, :, None, :]
    return _cast(xp, xp.reshape(index, (-1,)), "int32")


def _gather(x, indices, axis):
    """`ops.take` for indices known to be in range (all of this module's): on TensorFlow
    one GatherV2, where `ops.take` adds five ops (and five constants) that wrap negative
    indices, to every gather of every layer's graph."""
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        return tf.gather(x, indices, axis=axis)
    return ops.take(x, indices, axis=axis)


def _cast(xp, x, dtype):
    return ops.cast(x, dtype) if xp is ops else x.astype(dtype)


def _axis_inside(xp, size, d, num_blocks, b, k, mask_border):
    """(d, num_blocks, b, M) bool along one axis, for each sub-grid offset: whether memory
    position m of block j is in the window of the block's query p (and in the image)."""
    mem = b + k - 1
    position = xp.arange(b)[:, None]
    memory = xp.arange(mem)[None, :]
    window = (memory >= position) & (memory < position + k)  # (b, M)
    inside = xp.broadcast_to(window[None, None], (d, num_blocks, b, mem))
    if mask_border:
        grid = xp.arange(num_blocks)[:, None] * b + memory - k // 2  # (blocks, M)
        image = xp.arange(d)[:, None, None] + d * grid[None]  # (d, blocks, M)
        real = (grid[None] >= 0) & (image < size)
        inside = inside & real[:, :, None, :]
    return inside


def _grid_axes_inside(xp, height, width, d, nbh, nbw, b, k, mask_border):
    """`_axis_inside` for the rows and the columns of each of the d*d sub-grids (grid
    g = row offset * d + column offset): (d*d, nbh, b, M) and (d*d, nbw, b, M) bool."""
    rows = xp.repeat(_axis_inside(xp, height, d, nbh, b, k, mask_border), d, axis=0)
    cols = xp.tile(_axis_inside(xp, width, d, nbw, b, k, mask_border), (d, 1, 1, 1))
    return rows, cols


def _masks(xp, height, width, d, nbh, nbw, b, k, mask_border, per_block):
    """See `_Blocks.masks`."""
    mem = b + k - 1
    rows, cols = _grid_axes_inside(xp, height, width, d, nbh, nbw, b, k, mask_border)
    full = (d * d, 1, nbh, nbw, b, b, mem)
    rows = xp.broadcast_to(rows[:, None, :, None, :, None, :], full)
    cols = xp.broadcast_to(cols[:, None, None, :, None, :, :], full)
    per_query = (d * d, 1, nbh * nbw * b * b)
    row_shape, col_shape = per_query + (mem, 1), per_query + (1, mem)
    if per_block:
        row_shape = col_shape = (d * d, 1, nbh * nbw, 1, b * b * mem)

    def bias(inside, shape):
        return xp.reshape(_cast(xp, xp.where(inside, 0.0, MASKED), "float32"), shape)

    return bias(rows, row_shape), bias(cols, col_shape)


def _inside(xp, height, width, d, nbh, nbw, b, k, mask_border):
    """See `_Blocks.inside`."""
    mem = b + k - 1
    rows, cols = _grid_axes_inside(xp, height, width, d, nbh, nbw, b, k, mask_border)
    # The outer `and` over flattened axes, then one transpose to (g, block row, block
    # column, query row, query column, memory row, memory column): TensorFlow broadcasts
    # at most 5 dimensions.
    inside = xp.reshape(rows, (d * d, -1, 1)) & xp.reshape(cols, (d * d, 1, -1))
    inside = xp.reshape(inside, (d * d, nbh, b, mem, nbw, b, mem))
    inside = xp.transpose(inside, (0, 1, 4, 2, 5, 3, 6))
    return xp.reshape(inside, (d * d, 1, nbh * nbw, b * b, mem * mem))


@functools.lru_cache(maxsize=64)
def _select_indices(b, k):
    """Constants of `_attention_select`.

    `centres` (b*b,): where each block query's own position (p + k//2, q + k//2), its
    window's centre, lies among the flattened (b*b, M*M) logits of its block.
    `tables` (b*b * 2M,): for block query (p, q), the offset (row offsets 0..k-1, then
    column offsets k..2k-1) of memory row m, then of memory column m, clipped into the
    window; positions outside the window read a clipped offset and are masked.
    """
    mem = b + k - 1
    p, q = np.divmod(np.arange(b * b), b)
    centres = (p * b + q) * mem * mem + (p + k // 2) * mem + q + k // 2
    m = np.arange(mem)
    rows = np.clip(m[None, :] - p[:, None], 0, k - 1)
    cols = k + np.clip(m[None, :] - q[:, None], 0, k - 1)
    tables = np.concatenate([rows, cols], axis=1).reshape(-1)
    return centres.astype("int32"), tables.astype("int32")


@functools.lru_cache(maxsize=64)
def _relative_indices(b, k):
    """Shift indices between per-offset and per-memory-position relative logits.

    `skew` (2 * b*b * M,): takes each block query's (b*b, 2k) logits per offset ([row
    offsets | column offsets]) to (2, b*b, M), entry [0, (p, q), m] = row logit of offset
    m - p, [1, (p, q), m] = column logit of offset m - q. Pairs outside the window read a
    clipped offset; they are masked. `unskew` (b*b * 2k,): the way back, from the
    (b*b, 2, M) row and column sums of the logits' gradient, which are exactly 0 outside
    the window.
    """
    mem = b + k - 1
    p, q, m = np.meshgrid(np.arange(b), np.arange(b), np.arange(mem), indexing="ij")
    query = p * b + q
    skew = np.stack(
        [query * 2 * k + np.clip(m - p, 0, k - 1), query * 2 * k + k + np.clip(m - q, 0, k - 1)]
    )
    p, q, a = np.meshgrid(np.arange(b), np.arange(b), np.arange(k), indexing="ij")
    query = p * b + q
    unskew = np.stack([(query * 2 + 0) * mem + a + p, (query * 2 + 1) * mem + a + q], axis=-2)
    return skew.reshape(-1).astype("int32"), unskew.reshape(-1).astype("int32")


@functools.lru_cache(maxsize=64)
def _selectors(mem):
    """(M*M, 2M) float32 0/1 matrix: logits (M*M,) @ it = [row sums (M,), column sums (M,)]."""
    rows, cols = np.divmod(np.arange(mem * mem), mem)
    out = np.zeros((mem * mem, 2 * mem), "float32")
    out[np.arange(mem * mem), rows] = 1.0
    out[np.arange(mem * mem), mem + cols] = 1.0
    return out


def _offset_tables(row_table, col_table):
    """(k, N, Dr) and (k, N, Dc) -> (2k, N, Dr + Dc): row offsets then column offsets.

    Each head's query is [row part | column part]; the row table is zero on the column part
    and the other way round, so that one matmul gives both axes' logits.
    """
    row_dim, col_dim = row_table.shape[-1], col_table.shape[-1]
    rows = ops.pad(row_table, [[0, 0], [0, 0], [0, col_dim]])
    cols = ops.pad(col_table, [[0, 0], [0, 0], [row_dim, 0]])
    return ops.concatenate([rows, cols], axis=0)


def _attention(blocks, q, k, v, *tables):
    """Blocked attention over (G, rows, cols, N, D) tensors, undilated, with its gradient.

    `tables` are the (k, N, Dr) row and (k, N, Dc) column tables, or nothing.

    The gradient is the softmax's in its flash-attention form: sum_m p_m dp_m, the term
    every logit's gradient subtracts, equals dout . out, a sum over the value channels
    instead of over the M*M memory positions. The weights are recomputed in the backward
    pass rather than stored from the forward one, so no (X, b*b, M*M) tensor outlives
    either pass.
    """
    t = blocks
    num_heads, key_dim = q.shape[3], q.shape[4]
    bb, mem, kernel = t.b * t.b, t.mem, t.k
    grids, per_grid = t.d * t.d, t.nbh * t.nbw * bb

    @ops.custom_gradient
    def attend(q, k, v, *tables):
        qb, km, vm = t.queries(q), t.memory(k), t.memory(v)
        row_term, col_term = t.masks(per_block=bool(tables))
        if tables:
            # Relative logits per offset (k per axis), then shifted into the memory
            # positions by one gather.
            skew, unskew = (ops.convert_to_tensor(i) for i in _relative_indices(t.b, kernel))
            offset_tables = _offset_tables(*tables)  # (2k, N, D)
            batch = _shape(q)[0]
            queries = ops.reshape(qb, (batch, num_heads, -1, key_dim))
            # Tables broadcast by hand: TF 2.21's batched matmul gives wrong numbers (and
            # corrupts memory) when it broadcasts a batch of 1 head against several
            # (tensorflow/tensorflow#117700; reproduced by tests/test_tf_workarounds.py).
            by_offset = (batch, num_heads, key_dim, 2 * kernel)
            tables_t = ops.broadcast_to(ops.transpose(offset_tables, (1, 2, 0)), by_offset)
            offsets = ops.matmul(queries, tables_t)  # (G, N, blocks * b*b, 2k)
            rel = _gather(ops.reshape(offsets, (-1, bb * 2 * kernel)), skew, axis=1)
            rel = ops.reshape(rel, (grids, -1, t.nbh * t.nbw, 2, bb * mem))
            row_rel, col_rel = ops.split(rel, 2, axis=3)
            # Masked per block, then reshaped: added to the logits as they are, the masks
            # would join the logits' sum, which TF's graph optimizer then reorders into
            # three passes over the logits instead of two.
            row_term = ops.reshape(row_rel + row_term, (grids, -1, per_grid, mem, 1))
            col_term = ops.reshape(col_rel + col_term, (grids, -1, per_grid, 1, mem))

        def probs():
            """Softmax weights (X, b*b, M*M), float32, of the biased block logits."""
            logits = ops.einsum("xqd,xmd->xqm", qb, km)
            logits = ops.reshape(logits, (grids, -1, per_grid, mem, mem))
            logits = logits + row_term + col_term
            weights = ops.softmax(ops.reshape(logits, (-1, mem * mem)), axis=-1)
            return ops.reshape(weights, (-1, bb, mem * mem))

        out_blocks = ops.matmul(ops.cast(probs(), vm.dtype), vm)

        def grad(*args, upstream=None):
            dout = t.queries(args[0] if upstream is None else upstream)
            weights = probs()
            dweights = ops.cast(ops.einsum("xqv,xmv->xqm", dout, vm), "float32")
            delta = ops.sum(
                ops.cast(dout, "float32") * ops.cast(out_blocks, "float32"), -1, keepdims=True
            )
            dlogits = weights * (dweights - delta)  # (X, b*b, M*M)
            dqb = ops.einsum("xqm,xmd->xqd", dlogits, km)
            dkm = ops.einsum("xqm,xqd->xmd", dlogits, qb)
            dvm = ops.einsum("xqm,xqv->xmv", ops.cast(weights, vm.dtype), dout)
            dtables = ()
            if tables:
                # Row and column sums of each query's M x M logit gradients as one matmul
                # against 0/1 selectors, one pass; TF's CPU reduction over a middle axis
                # is slow.
                selectors = ops.convert_to_tensor(_selectors(mem))
                sums = ops.matmul(ops.reshape(dlogits, (-1, mem * mem)), selectors)
                doffsets = _gather(ops.reshape(sums, (-1, bb * 2 * mem)), unskew, axis=1)
                doffsets = ops.reshape(doffsets, (batch, num_heads, -1, 2 * kernel))
                by_channel = (batch, num_heads, 2 * kernel, key_dim)
                tables_b = ops.broadcast_to(ops.transpose(offset_tables, (1, 0, 2)), by_channel)
                dqueries = ops.matmul(doffsets, tables_b)
                dqb = dqb + ops.reshape(dqueries, (-1, bb, key_dim))
                # Per image, then summed over the images: the order TensorFlow's own
                # gradient of the broadcast matmul adds in, so training gives the same bits.
                dtable = ops.sum(ops.einsum("gnpd,gnpk->gndk", queries, doffsets), axis=0)
                dtable = ops.transpose(dtable, (2, 0, 1))  # (2k, N, D)
                row_dim = tables[0].shape[-1]
                drow = ops.slice(dtable, (0, 0, 0), (kernel, num_heads, row_dim))
                dcol = ops.slice(dtable, (kernel, 0, row_dim), tables[1].shape)
                dtables = (drow, dcol)
            return (
                t.images(dqb, num_heads),
                t.memory_gradient(dkm, num_heads),
                t.memory_gradient(dvm, num_heads),
                *dtables,
            )

        return t.images(out_blocks, num_heads), grad

    return attend(q, k, v, *tables)


def _attention_select(blocks, q, k, v, *tables, groups=1, bands=1):
    """`_attention`'s forward pass with the select mask (see `local_attention_blocked`),
    for inference and export; its gradient is left to automatic differentiation.

    The heads are attended in `groups` groups, and each group's blocks in `bands` bands of
    block rows, one after the other: each chunk's chain of ops in the graph ends before
    the next one's starts, and runtimes that run a graph op by op on one thread keep that
    order, so a chunk's logits stay in the cache through the passes over them.
    """
    t = blocks
    if bands == 1:
        band_list = [None]
    else:
        band_list = [(i * t.nbh // bands, (i + 1) * t.nbh // bands) for i in range(bands)]
    # The constants of each band, shared by the groups of heads.
    insides = [t.inside(band) for band in band_list]
    spread = None
    if tables:  # The (2M, M*M) spreading matrix of the relative logits.
        spread = ops.convert_to_tensor(np.ascontiguousarray(_selectors(t.mem).T))
    if groups == 1:
        chunks = [(q, k, v, *tables)]
    else:
        parts = [ops.split(x, groups, axis=3) for x in (q, k, v)]
        parts += [ops.split(table, groups, axis=1) for table in tables]
        chunks = zip(*parts, strict=True)
    outs = []
    for group_q, group_k, group_v, *group_tables in chunks:
        per_query = _per_query_tables(t, *group_tables) if tables else None
        rows, keys = t.query_rows(group_q), t.padded_memory(group_k)
        values = t.padded_memory(group_v)
        images = []
        for band, inside in zip(band_list, insides, strict=True):
            qb = t.band_queries(rows, band)
            km, vm = t.band_memory(keys, band), t.band_memory(values, band)
            out_blocks = _select_blocks(t, qb, km, vm, per_query, spread, inside, band)
            images.append(t.band_images(out_blocks, group_q.shape[3], band))
        outs.append(images[0] if bands == 1 else ops.concatenate(images, axis=1))
    return t.crop(outs[0] if groups == 1 else ops.concatenate(outs, axis=3))


def _per_query_tables(t, row_table, col_table):
    """(N, b*b, D, 2M): for each block query, its row then column offset tables read at
    each memory row and column (clipped into the window; positions outside it are
    masked)."""
    num_heads, key_dim = row_table.shape[1], row_table.shape[2] + col_table.shape[2]
    _, table_index = _select_indices(t.b, t.k)
    per_query = _gather(_offset_tables(row_table, col_table), table_index, axis=0)
    per_query = ops.reshape(per_query, (t.b * t.b, 2 * t.mem, num_heads, key_dim))
    return ops.transpose(per_query, (2, 0, 3, 1))


def _select_blocks(t, qb, km, vm, per_query, spread, inside, band):
    """The attention of one chunk's blocks: (X, b*b, D) queries, (X, M*M, D) keys and
    (X, M*M, Dv) values -> (X, b*b, Dv); `spread` is the (2M, M*M) 0/1 spreading matrix.

    Laid out for runtimes that run the graph op by op (ONNX Runtime, LiteRT): the
    relative logits are one (N, b*b) batch of small matmuls against the per-query tables,
    giving each query's 2M row and column logits, then one matmul against the 0/1
    selectors that spreads them over the M*M memory positions, where two Adds
    broadcasting over the short memory axes took 9x as long in ONNX Runtime
    (benchmarks/onnx_ops.py).
    """
    bb, mem = t.b * t.b, t.mem
    nb = t.nbw * (t.nbh if band is None else band[1] - band[0])
    centres, _ = _select_indices(t.b, t.k)
    # A matmul by the transposed keys, not an einsum: tf2onnx spells an einsum with a
    # dynamic batch in about 20 shape ops; ONNX Runtime fuses the transpose into the matmul.
    logits = ops.matmul(qb, ops.transpose(km, (0, 2, 1)))  # (X, b*b, M*M)
    if per_query is not None:
        num_heads, key_dim = per_query.shape[0], per_query.shape[2]
        queries = ops.reshape(qb, (-1, num_heads, nb, bb, key_dim))
        queries = ops.reshape(ops.transpose(queries, (1, 3, 0, 2, 4)), (num_heads, bb, -1, key_dim))
        axes = ops.matmul(queries, per_query)  # (N, b*b, G * blocks, 2M)
        axes = ops.reshape(axes, (num_heads, bb, -1, nb, 2 * mem))
        axes = ops.reshape(ops.transpose(axes, (2, 0, 3, 1, 4)), (-1, 2 * mem))
        logits = logits + ops.reshape(ops.matmul(axes, spread), (-1, bb, mem * mem))
    grids = t.d * t.d
    by_query = (grids, -1, nb, bb, mem * mem)
    centre = _gather(ops.reshape(logits, (grids, -1, nb, bb * mem * mem)), centres, axis=3)
    # tf2onnx writes this float select as two products and a sum, which ONNX Runtime
    # runs about 4x faster than its Where (benchmarks/onnx_ops.py).
    logits = select_masked(ops.reshape(logits, by_query), inside, centre[..., None])
    weights = ops.softmax(ops.reshape(logits, (-1, mem * mem)), axis=-1)
    # Exactly 0 outside the window: the keys there are other pixels' (not the zeros
    # outside the image), and the receptive field stays the window.
    weights = ops.reshape(weights, by_query) * ops.cast(inside, "float32")
    return ops.matmul(ops.cast(ops.reshape(weights, (-1, bb, mem * mem)), vm.dtype), vm)
