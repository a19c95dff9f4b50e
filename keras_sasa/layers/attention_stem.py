"""`AttentionStem2D`: the attention stem with spatially-aware values.

Ramachandran et al., "Stand-Alone Self-Attention in Vision Models" (NeurIPS 2019), §3.2 and
Appendix A.1. RGB pixels carry little content on their own, so plain self-attention makes a
poor stem; the paper injects position into the values instead: the value of a pixel is
computed with a mixture of value matrices whose weights depend on where the pixel sits in
the window,

    v_ab = (sum_m p(a, b, m) W_V^m) x_ab,
    p(a, b, m) = softmax_m((emb_row(a) + emb_col(b)) . nu_m).

The math is in the two functions below (`mixture_weights`, `stem_attention`), which own no
weights; the layer owns the weights, validation, dtype handling and config.
"""

import math

import keras
from keras import ops

from keras_sasa.layers import _pooling
from keras_sasa import _validation as check
from keras_sasa.ops._common import MASKED
from keras_sasa.ops._common import softmax_last

WINDOWS = ("block", "sliding")


def window_offsets(kernel_size):
    """Offsets (a - i) of a sliding window: -((k-1)//2) .. k//2, like Conv2D(padding="same").

    For odd k the window is centred; for even k it reaches one pixel further down/right
    (k = 4: offsets -1, 0, 1, 2).
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


def stem_attention(
    query, key, inputs, value_kernels, mixture, kernel_size, window="block", scale=None
):
    """Attention with spatially-aware values, as plain tensor functions.

    Args:
        query, key: `(batch, height, width, num_heads, key_dim)`.
        inputs: `(batch, height, width, channels)`: the x of v = (sum_m p W_V^m) x.
        value_kernels: `(num_mixtures, channels, num_heads * value_dim)`: the W_V^m.
        mixture: `(kernel_size, kernel_size, num_mixtures)` weights p(a, b, m), see
            `mixture_weights`.
        kernel_size: edge k of the window.
        window: `"block"`: the image is cut into k x k blocks starting at the top-left
            corner; every pixel attends to the pixels of its own block, and (a, b) is the
            position of the value inside the block. `"sliding"`: every pixel ij attends to
            the k x k window at offsets `window_offsets(k)` around it, and (a, b) is the
            position of the value inside that window. Either way, positions outside the
            image take no part in the softmax.
        scale: multiplier of the logits; `None` means `1 / sqrt(key_dim)`.

    Returns:
        `(batch, height, width, num_heads, value_dim)`, in the dtype of `inputs`.
    """
    if window not in WINDOWS:
        raise ValueError(
            f"Invalid value for argument `window`. Expected one of {WINDOWS}. "
            f"Received window={window!r}"
        )
    key_dim = query.shape[-1]
    scale = 1.0 / math.sqrt(key_dim) if scale is None else float(scale)
    query = ops.cast(query, "float32") * scale
    key = ops.cast(key, "float32")
    # One value matrix per window position: sum_m p(a, b, m) W_V^m, (k*k, channels, F).
    kernels = ops.einsum("abm,mcf->abcf", mixture, ops.cast(value_kernels, "float32"))
    kernels = ops.reshape(kernels, (kernel_size * kernel_size, *value_kernels.shape[1:]))
    kernels = ops.cast(kernels, inputs.dtype)
    attend = _block_attention if window == "block" else _sliding_attention
    return attend(query, key, inputs, kernels, kernel_size)


def _block_attention(query, key, inputs, kernels, k):
    """Attention inside the k x k blocks of the image (the paper's stem, Appendix A.1).

    Tensors stay within 6 dimensions and products within rank 4, so that the graph
    converts to TFLite's builtin ops.
    """
    shape = ops.shape(query)
    batch, height, width = shape[0], shape[1], shape[2]
    num_heads, key_dim = query.shape[3], query.shape[4]
    value_dim = kernels.shape[-1] // num_heads
    rows, cols = (height + k - 1) // k, (width + k - 1) // k

    def blocks(x):
        # (n, H, W, C) -> (n * rows * cols, k*k, C), padding the image to whole blocks.
        channels = x.shape[3]
        x = ops.pad(x, [[0, 0], [0, rows * k - height], [0, cols * k - width], [0, 0]])
        x = ops.reshape(x, (ops.shape(x)[0], rows, k, cols, k, channels))
        x = ops.transpose(x, (0, 1, 3, 2, 4, 5))
        return ops.reshape(x, (-1, k * k, channels))

    def by_head(x, dim):  # (n, k*k, N * dim) -> (n, N, k*k, dim)
        return ops.transpose(ops.reshape(x, (-1, k * k, num_heads, dim)), (0, 2, 1, 3))

    def flat(x):
        return ops.reshape(x, (batch, height, width, num_heads * key_dim))

    q, kk = by_head(blocks(flat(query)), key_dim), by_head(blocks(flat(key)), key_dim)
    logits = ops.einsum("xnpd,xnqd->xnpq", q, kk)  # (B * rows * cols, N, k*k, k*k)
    inside = blocks(ops.ones((1, height, width, 1), "float32"))  # (rows * cols, k*k, 1)
    mask = ops.reshape((1.0 - inside) * MASKED, (1, rows * cols, 1, 1, k * k))
    logits = ops.reshape(logits, (batch, rows * cols, num_heads, k * k, k * k)) + mask
    probs = ops.cast(softmax_last(logits), inputs.dtype)
    probs = ops.reshape(probs, (-1, num_heads, k * k, k * k))

    # The value at block position p uses its own mixed matrix kernels[p].
    values = ops.einsum("xpc,pcf->xpf", blocks(inputs), kernels)
    out = ops.matmul(probs, by_head(values, value_dim))  # (B * rows * cols, N, k*k, Dv)
    out = ops.reshape(ops.transpose(out, (0, 2, 1, 3)), (batch, rows, cols, k, k, -1))
    out = ops.transpose(out, (0, 1, 3, 2, 4, 5))
    out = ops.reshape(out, (batch, rows * k, cols * k, num_heads, value_dim))
    return out[:, :height, :width]


def _sliding_attention(query, key, inputs, kernels, k):
    """Attention over the k x k window around every pixel, from shifted slices.

    Tensors stay within 5 dimensions and products within rank 4 (TFLite builtins).
    """
    shape = ops.shape(query)
    batch, height, width = shape[0], shape[1], shape[2]
    num_heads, key_dim = query.shape[3], query.shape[4]
    value_dim = kernels.shape[-1] // num_heads
    before = -window_offsets(k)[0]
    after = k - 1 - before

    def pad(x):
        return ops.pad(x, [[0, 0], [before, after], [before, after], [0, 0]])

    def shifted(x, a, b):  # window row a, column b: offsets (a - before, b - before)
        return x[:, a : a + height, b : b + width]

    def window(x):
        # (n, H + k - 1, W + k - 1, C) -> (n, H, W, k*k, C): the k*k shifted copies.
        return ops.stack([shifted(x, a, b) for a in range(k) for b in range(k)], axis=3)

    keys = window(pad(ops.reshape(key, (batch, height, width, num_heads * key_dim))))
    keys = ops.reshape(keys, (-1, k * k, num_heads, key_dim))
    logits = ops.einsum("xnd,xpnd->xnp", ops.reshape(query, (-1, num_heads, key_dim)), keys)
    outside = 1.0 - window(pad(ops.ones((1, height, width, 1), "float32")))  # (1, H, W, k*k, 1)
    mask = ops.reshape(outside * MASKED, (1, height * width, 1, k * k))
    logits = ops.reshape(logits, (batch, height * width, num_heads, k * k)) + mask
    probs = ops.cast(softmax_last(logits), inputs.dtype)
    # Every pixel's value under each of the k*k window positions' matrices, then for
    # window position p the neighbour's value under matrix p.
    all_values = ops.einsum("bhwc,pcf->bhwpf", pad(inputs), kernels)
    values = [shifted(all_values, a, b)[:, :, :, a * k + b] for a in range(k) for b in range(k)]
    values = ops.reshape(ops.stack(values, axis=3), (-1, k * k, num_heads, value_dim))
    probs = ops.reshape(probs, (-1, num_heads, k * k))
    out = ops.einsum("xnp,xpnd->xnd", probs, values)
    return ops.reshape(out, (batch, height, width, num_heads, value_dim))


@keras.saving.register_keras_serializable(package="keras_sasa")
class AttentionStem2D(keras.layers.Layer):
    """Attention stem with spatially-aware values (Ramachandran et al. 2019, §3.2, A.1).

    Every pixel ij attends, per head, to a k x k window of pixels ab:

        y_ij = sum_ab softmax_ab(s * q_ij . k_ab) v_ab,
        v_ab = (sum_m p(a, b, m) W_V^m) x_ab,
        p(a, b, m) = softmax_m((emb_row(a) + emb_col(b)) . nu_m),

    with 1x1 projections q = W_Q x, k = W_K x (no biases), `num_mixtures` value matrices
    W_V^m, and (a, b) the position of the value pixel inside the window. Unlike
    `LocalSelfAttention2D` there is no relative term in the logits: position enters
    through the values. The mixture weights p are shared by all heads; head outputs are
    concatenated into `filters` channels.

    Window (`window` argument):
    - `"block"` (default, the paper's ImageNet stem): the image is cut into
      `kernel_size` x `kernel_size` blocks from the top-left corner, and every pixel
      attends to the pixels of its own block; (a, b) is the value's absolute position in
      the block. The paper "performs self-attention within each 4x4 spatial block of the
      original image" and aligns the receptive field with the 4x4 max pool that follows
      (Appendix A.1: "the absolute position of the value within the pooling window");
      follow this layer with `MaxPooling2D(kernel_size)` ("valid") to get one output per
      block. A last partial block (height or width not a multiple of k) is attended to
      over the pixels it has.
    - `"sliding"`: every pixel ij attends to the k x k window at row and column offsets
      `-((k-1)//2) .. k//2` around it (for k = 4: -1, 0, 1, 2, the taps of
      `Conv2D(4, padding="same")`), and (a, b) = (a - i + (k-1)//2, b - j + (k-1)//2) is
      the value's position in that window, so the value of one pixel differs from one
      query to the next. Translation-equivariant; use it for a stem without pooling. Each
      pixel has k*k values (one per window position), so the value projection costs as
      much as a k x k convolution and holds k*k times the memory of `"block"`.
    In both, positions outside the image take no part in the softmax.

    Scale: by default the logits are multiplied by s = 1 / sqrt(head_size);
    `scale_logits=False` gives the paper's s = 1.

    Downsampling as in `LocalSelfAttention2D`: attention at stride 1, then `strides` x
    `strides` average pooling ("same" padding).

    Mixed precision: the variables stay float32; logits, masking and both softmaxes are
    float32; the projections and the weighted sum of values run in the compute dtype.

    Args:
        filters: number of output channels (q, k and each W_V^m have `filters` channels).
        kernel_size: edge k of the window. Defaults to 4, the paper's stem.
        num_heads: number of heads; must divide `filters`. Defaults to 4 (the paper's).
        num_mixtures: number of value matrices W_V^m. Defaults to 4 (the paper does not
            state it).
        strides: average-pooling factor applied after the attention. Defaults to 1.
        window: `"block"` (default) or `"sliding"`, see above.
        scale_logits: multiply the logits by 1 / sqrt(head_size). Defaults to True.
        kernel_initializer: initializer of W_Q, W_K and the W_V^m.
        embedding_initializer: initializer of emb_row, emb_col (each `(kernel_size,
            filters)`) and the nu_m (`(num_mixtures, filters)`). Defaults to a truncated
            normal with standard deviation 1 / sqrt(filters).
        kernel_regularizer, embedding_regularizer: regularizers.
        kernel_constraint, embedding_constraint: constraints.
        **kwargs: base layer arguments (`name`, `dtype`, `trainable`, ...).

    Call arguments:
        inputs: `(batch, height, width, channels)` tensor; batch, height and width may be
            unknown.

    Returns:
        `(batch, ceil(height / strides), ceil(width / strides), filters)` tensor.

    Example (the paper's stem: 224 x 224 -> 56 x 56 x 64):

    >>> stem = keras.Sequential([
    ...     keras.Input((224, 224, 3)),
    ...     keras_sasa.AttentionStem2D(64, kernel_size=4, num_heads=4),
    ...     keras.layers.BatchNormalization(),
    ...     keras.layers.MaxPooling2D(4),
    ... ])
    >>> stem.output_shape
    (None, 56, 56, 64)
    """

    def __init__(
        self,
        filters,
        kernel_size=4,
        num_heads=4,
        num_mixtures=4,
        strides=1,
        window="block",
        scale_logits=True,
        kernel_initializer="glorot_uniform",
        embedding_initializer=None,
        kernel_regularizer=None,
        embedding_regularizer=None,
        kernel_constraint=None,
        embedding_constraint=None,
        **kwargs,
    ):
        # Inputs and weights are cast by hand in call(): the mixture embeddings must reach
        # their softmax in float32, which Keras' autocasting would not allow.
        kwargs.pop("autocast", None)
        super().__init__(autocast=False, **kwargs)
        self.filters = check.positive_int("filters", filters)
        self.kernel_size = check.positive_int("kernel_size", kernel_size)
        self.num_heads = check.positive_int("num_heads", num_heads)
        check.heads_divide_filters(self.num_heads, self.filters)
        self.num_mixtures = check.positive_int("num_mixtures", num_mixtures)
        self.strides = check.positive_int("strides", strides)
        self.window = check.one_of("window", window, WINDOWS)
        self.scale_logits = check.boolean("scale_logits", scale_logits)
        self.head_size = self.filters // self.num_heads
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.embedding_initializer = (
            None if embedding_initializer is None else keras.initializers.get(embedding_initializer)
        )
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.embedding_regularizer = keras.regularizers.get(embedding_regularizer)
        self.kernel_constraint = keras.constraints.get(kernel_constraint)
        self.embedding_constraint = keras.constraints.get(embedding_constraint)
        self.input_spec = keras.layers.InputSpec(ndim=4)

    def build(self, input_shape):
        channels = check.image_channels(self, input_shape)
        self.input_spec = keras.layers.InputSpec(ndim=4, axes={-1: channels})

        def kernel(name, shape):
            return self.add_weight(
                name=name,
                shape=shape,
                initializer=self.kernel_initializer,
                regularizer=self.kernel_regularizer,
                constraint=self.kernel_constraint,
            )

        embedding_initializer = self.embedding_initializer or (
            keras.initializers.TruncatedNormal(stddev=self.filters**-0.5)
        )

        def embedding(name, rows):
            return self.add_weight(
                name=name,
                shape=(rows, self.filters),
                initializer=embedding_initializer,
                regularizer=self.embedding_regularizer,
                constraint=self.embedding_constraint,
            )

        self.query_kernel = kernel("query_kernel", (channels, self.filters))
        self.key_kernel = kernel("key_kernel", (channels, self.filters))
        self.value_kernels = kernel("value_kernels", (self.num_mixtures, channels, self.filters))
        self.row_embeddings = embedding("row_embeddings", self.kernel_size)
        self.column_embeddings = embedding("column_embeddings", self.kernel_size)
        self.mixture_embeddings = embedding("mixture_embeddings", self.num_mixtures)

    def call(self, inputs):
        x = ops.cast(inputs, self.compute_dtype)
        kernel = ops.concatenate([self.query_kernel, self.key_kernel], axis=-1)
        query, key = ops.split(ops.matmul(x, ops.cast(kernel, self.compute_dtype)), 2, axis=-1)
        shape = ops.shape(x)
        heads = (shape[0], shape[1], shape[2], self.num_heads, self.head_size)
        mixture = mixture_weights(
            self.row_embeddings.value,
            self.column_embeddings.value,
            self.mixture_embeddings.value,
        )
        out = stem_attention(
            ops.reshape(query, heads),
            ops.reshape(key, heads),
            x,
            self.value_kernels.value,
            mixture,
            kernel_size=self.kernel_size,
            window=self.window,
            scale=None if self.scale_logits else 1.0,
        )
        return _pooling.downsample(out, self.strides, self.filters)

    def compute_output_shape(self, input_shape):
        return _pooling.output_shape(input_shape, self.strides, self.filters)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "filters": self.filters,
                "kernel_size": self.kernel_size,
                "num_heads": self.num_heads,
                "num_mixtures": self.num_mixtures,
                "strides": self.strides,
                "window": self.window,
                "scale_logits": self.scale_logits,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
                "embedding_initializer": (
                    None
                    if self.embedding_initializer is None
                    else keras.initializers.serialize(self.embedding_initializer)
                ),
                "kernel_regularizer": keras.regularizers.serialize(self.kernel_regularizer),
                "embedding_regularizer": keras.regularizers.serialize(self.embedding_regularizer),
                "kernel_constraint": keras.constraints.serialize(self.kernel_constraint),
                "embedding_constraint": keras.constraints.serialize(self.embedding_constraint),
            }
        )
        return config
