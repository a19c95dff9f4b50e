"""`AttentionStem2D`: the attention stem with spatially-aware values.

Ramachandran et al., "Stand-Alone Self-Attention in Vision Models" (NeurIPS 2019), §3.2 and
Appendix A.1. The layer owns the weights (W_Q, W_K, the W_V^m and the row, column and
mixture embeddings), validates its arguments and handles dtypes; the attention itself lives
in `keras_sasa.ops.stem`.
"""

import keras
from keras import ops

from keras_sasa.layers import _pooling
from keras_sasa import _validation as check
from keras_sasa.ops import stem as stem_ops


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
        `kernel_size` and `strides` also take a pair of equal integers, as `Conv2D`
        writes them; a pair of different values is refused.
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
        training: whether the call is part of a training step (Keras sets it). Window
            positions outside the image leave the softmax by an added -1e9 in training
            and by a select against the pixel's own logit in inference, which keeps the
            logits' range for int8 quantization: the same outputs to float32 rounding.

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
        self.kernel_size = check.square("kernel_size", kernel_size)
        self.num_heads = check.positive_int("num_heads", num_heads)
        check.heads_divide_filters(self.num_heads, self.filters)
        self.num_mixtures = check.positive_int("num_mixtures", num_mixtures)
        self.strides = check.square("strides", strides)
        self.window = check.one_of("window", window, stem_ops.WINDOWS)
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

    def call(self, inputs, training=None):
        out = stem_ops.attention_stem(
            ops.cast(inputs, self.compute_dtype),
            self.query_kernel.value,
            self.key_kernel.value,
            self.value_kernels.value,
            self.row_embeddings.value,
            self.column_embeddings.value,
            self.mixture_embeddings.value,
            num_heads=self.num_heads,
            kernel_size=self.kernel_size,
            window=self.window,
            scale=None if self.scale_logits else 1.0,
            # Training adds MASKED to the logits outside the image; inference selects
            # (bounded logits, for int8 export): the same outputs to float32 rounding.
            select_mask=not training,
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
