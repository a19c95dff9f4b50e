"""`LocalSelfAttention2D`: the stand-alone self-attention layer of Ramachandran et al. 2019.

The layer owns the weights (W_Q, W_K, W_V and the relative row/column tables), validates
its arguments and handles dtypes; the attention itself lives in `keras_sasa.ops`.
"""

import keras
from keras import ops

from keras_sasa.layers import _pooling
from keras_sasa import _validation as check
from keras_sasa.ops import window_attention as attention_ops
from keras_sasa.ops._common import shape as static_shape

# The widest window accepted. Where height and width are known, a window wider than the
# map reaches only masked positions and is cut to what the map reaches (see `_window`);
# where they are not, the ops pad the input by half the window on each side, and a
# window far larger than any image would take memory for nothing.
MAX_KERNEL_SIZE = 1023


@keras.saving.register_keras_serializable(package="keras_sasa")
class LocalSelfAttention2D(keras.layers.Layer):
    """Local self-attention over the k x k window around every pixel (SASA).

    For every pixel ij this layer computes, per head (Ramachandran et al. 2019, eq. 2-3):

        y_ij = sum_{ab in N_k(ij)} softmax_ab(s * (q_ij . k_ab + q_ij . r_{a-i,b-j})) v_ab

    with 1x1 projections q = W_Q x, k = W_K x, v = W_V x (no bias unless `use_bias`) and
    N_k(ij) the `kernel_size` x `kernel_size` window centred on ij (spaced by
    `dilation_rate`). The channels are split into `num_heads` heads, each with its own
    softmax; the heads' outputs are concatenated (no output projection), giving `filters`
    channels.

    Relative position: a learned row table and a learned column table hold one embedding
    per offset in the window. Every head uses the first ceil(head_size / 2) channels of
    its query against the row offset a-i and the remaining floor(head_size / 2) against the
    column offset b-j (an odd head size gives the extra channel to the rows). The
    embeddings enter the logits only, never the values.

    Scale: by default the logits are multiplied by s = 1 / sqrt(head_size), as in
    Transformers; `scale_logits=False` gives the paper's unscaled equation (s = 1).

    Borders: with `border="mask"` positions outside the image take no part in the
    softmax, so a corner pixel spreads its attention over the pixels that exist. With
    `border="zeros"` they take part with zero keys and values, as in other implementations.

    Downsampling follows the paper: attention runs at stride 1, then `strides` x `strides`
    average pooling ("same" padding: the output has ceil(size / strides) rows and columns,
    like `Conv2D(padding="same")`).

    Windows wider than the map: with `border="mask"` and a known height and width, the
    window is cut to the positions that can fall inside the map (2n - 1 for a larger side
    of n pixels, at `dilation_rate` 1). The outputs and attention scores are the same (the
    cut positions have weight 0 and are returned as 0); the relative tables keep their
    `kernel_size` rows, of which only the central ones are used.

    Mixed precision: the variables stay float32; logits, masking and softmax are computed
    in float32 and only the weighted sum of values runs in the compute dtype.

    Args:
        filters: number of output channels (q, k and v all have `filters` channels).
        kernel_size: odd spatial extent k of the window, at most `MAX_KERNEL_SIZE`
            (1023). Defaults to 7, the paper's choice.
        num_heads: number of heads N; must divide `filters`. Defaults to 8.
        strides: average-pooling factor applied after the attention. Defaults to 1.
        dilation_rate: spacing between the window's positions. Defaults to 1.
            `kernel_size`, `strides` and `dilation_rate` also take a pair of equal
            integers, as `Conv2D` writes them (`strides=(2, 2)`); a pair of different
            values is refused.
        border: `"mask"` (default) or `"zeros"`, see above.
        use_bias: whether the q/k/v projections have biases. Defaults to False, as in the
            paper.
        scale_logits: multiply the logits by 1 / sqrt(head_size). Defaults to True.
        use_relative_position: learn the row/column tables. False drops the positional
            term (the "none" row of the paper's Table 5).
        implementation: `"auto"` (default), `"blocked"`, `"reference"` or `"unrolled"`
            (the export implementation: converts to TFLite builtins); see
            `keras_sasa.ops.window_attention`. All give the same numbers.
        kernel_initializer, bias_initializer: initializers of the projections.
        embedding_initializer: initializer of the relative tables. Defaults to a truncated
            normal with standard deviation 1 / sqrt(head_size).
        kernel_regularizer, bias_regularizer, embedding_regularizer: regularizers.
        kernel_constraint, bias_constraint, embedding_constraint: constraints.
        **kwargs: base layer arguments (`name`, `dtype`, `trainable`, ...).

    Call arguments:
        inputs: `(batch, height, width, channels)` tensor; batch, height and width may be
            unknown, and the image may be smaller than the window.
        training: whether the call is part of a training step (Keras sets it). Training
            runs the blocked implementation with its hand-written, memory-light gradient;
            inference masks the keys outside each window with a select that keeps the
            logits bounded (faster in ONNX Runtime, and quantizable): the outputs agree
            to float32 rounding.
        return_attention_scores: also return the attention weights. Defaults to False.

    Returns:
        `(batch, ceil(height / strides), ceil(width / strides), filters)` tensor; with
        `return_attention_scores=True`, the tuple `(outputs, scores)`, where `scores` is the
        float32 `(batch, height, width, num_heads, kernel_size, kernel_size)` softmax of
        every pixel over its window: `scores[n, i, j, h, a, b]` is the weight of the pixel
        at `(i + (a - kernel_size // 2) * dilation_rate, j + (b - kernel_size // 2) *
        dilation_rate)`, exactly 0 outside the image with `border="mask"`. The scores are
        at full resolution (the `strides` pooling applies to the outputs only). Both come
        from one computation: the reference implementation's with
        `implementation="reference"`, otherwise the unrolled one's.

    Example:

    >>> model = keras.Sequential([
    ...     keras.Input((32, 32, 16)),
    ...     keras_sasa.LocalSelfAttention2D(32, kernel_size=7, num_heads=4),
    ...     keras.layers.GlobalAveragePooling2D(),
    ...     keras.layers.Dense(10),
    ... ])
    >>> model(np.zeros((2, 32, 32, 16))).shape
    (2, 10)
    """

    def __init__(
        self,
        filters,
        kernel_size=7,
        num_heads=8,
        strides=1,
        dilation_rate=1,
        border="mask",
        use_bias=False,
        scale_logits=True,
        use_relative_position=True,
        implementation="auto",
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        embedding_initializer=None,
        kernel_regularizer=None,
        bias_regularizer=None,
        embedding_regularizer=None,
        kernel_constraint=None,
        bias_constraint=None,
        embedding_constraint=None,
        **kwargs,
    ):
        # Inputs and weights are cast by hand in call(): the relative tables must reach
        # the logits in float32, which Keras' autocasting would not allow.
        kwargs.pop("autocast", None)
        super().__init__(autocast=False, **kwargs)
        self.filters = check.positive_int("filters", filters)
        self.kernel_size = check.square("kernel_size", kernel_size, check.odd_kernel_size)
        if self.kernel_size > MAX_KERNEL_SIZE:
            raise check.error(
                "kernel_size",
                kernel_size,
                f"Expected a window of at most {MAX_KERNEL_SIZE}, which already spans a "
                f"{MAX_KERNEL_SIZE // 2 + 1}-pixel map from any of its pixels",
            )
        self.num_heads = check.positive_int("num_heads", num_heads)
        check.heads_divide_filters(self.num_heads, self.filters)
        self.strides = check.square("strides", strides)
        self.dilation_rate = check.square("dilation_rate", dilation_rate)
        self.border = check.one_of("border", border, attention_ops.BORDER_MODES)
        self.use_bias = check.boolean("use_bias", use_bias)
        self.scale_logits = check.boolean("scale_logits", scale_logits)
        self.use_relative_position = check.boolean("use_relative_position", use_relative_position)
        self.implementation = check.one_of(
            "implementation", implementation, attention_ops.IMPLEMENTATIONS
        )
        self.head_size = self.filters // self.num_heads
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.embedding_initializer = (
            None if embedding_initializer is None else keras.initializers.get(embedding_initializer)
        )
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.bias_regularizer = keras.regularizers.get(bias_regularizer)
        self.embedding_regularizer = keras.regularizers.get(embedding_regularizer)
        self.kernel_constraint = keras.constraints.get(kernel_constraint)
        self.bias_constraint = keras.constraints.get(bias_constraint)
        self.embedding_constraint = keras.constraints.get(embedding_constraint)
        self.input_spec = keras.layers.InputSpec(ndim=4)

    def build(self, input_shape):
        channels = check.image_channels(self, input_shape)
        self.input_spec = keras.layers.InputSpec(ndim=4, axes={-1: channels})

        def projection(name):
            return self.add_weight(
                name=name,
                shape=(channels, self.filters),
                initializer=self.kernel_initializer,
                regularizer=self.kernel_regularizer,
                constraint=self.kernel_constraint,
            )

        self.query_kernel = projection("query_kernel")
        self.key_kernel = projection("key_kernel")
        self.value_kernel = projection("value_kernel")
        if self.use_bias:
            self.qkv_bias = self.add_weight(
                name="qkv_bias",
                shape=(3 * self.filters,),
                initializer=self.bias_initializer,
                regularizer=self.bias_regularizer,
                constraint=self.bias_constraint,
            )
        if self.use_relative_position:
            initializer = self.embedding_initializer or keras.initializers.TruncatedNormal(
                stddev=self.head_size**-0.5
            )
            row_dim = (self.head_size + 1) // 2

            def table(name, dim):
                return self.add_weight(
                    name=name,
                    shape=(self.kernel_size, self.num_heads, dim),
                    initializer=initializer,
                    regularizer=self.embedding_regularizer,
                    constraint=self.embedding_constraint,
                )

            self.row_embeddings = table("row_embeddings", row_dim)
            self.column_embeddings = table("column_embeddings", self.head_size - row_dim)

    def call(self, inputs, training=None, return_attention_scores=False):
        x = ops.cast(inputs, self.compute_dtype)
        # Stacked then reshaped: the same (channels, 3 * filters) matrix as a concatenation,
        # but TensorFlow's gradient of a stack is one unstack, where a concatenation's is
        # nine ops (its offsets, then a slice per kernel).
        kernels = ops.stack([self.query_kernel, self.key_kernel, self.value_kernel], axis=1)
        kernel = ops.reshape(kernels, (kernels.shape[0], 3 * self.filters))
        # A matrix product of the pixels: a 4-D by 2-D matmul is a tensordot on TensorFlow,
        # whose shape arithmetic (about 17 ops) the exported graphs then run at every call.
        qkv = ops.matmul(ops.reshape(x, (-1, x.shape[-1])), ops.cast(kernel, self.compute_dtype))
        if self.use_bias:
            qkv = qkv + ops.cast(self.qkv_bias, self.compute_dtype)
        shape = static_shape(x)
        # One reshape to (q, k, v) x heads, then one split: a reshape each would put three
        # more ops (and their gradients) in the graph. The batch as -1: no Shape op for it.
        heads = (-1, shape[1], shape[2], 3 * self.num_heads, self.head_size)
        query, key, value = ops.split(ops.reshape(qkv, heads), 3, axis=3)
        k = self._window(x.shape[1], x.shape[2])
        cut = (self.kernel_size - k) // 2
        if self.use_relative_position and cut:
            row = self.row_embeddings.value[cut : cut + k]
            column = self.column_embeddings.value[cut : cut + k]
        elif self.use_relative_position:
            # The whole tables: a slice of all of them would put two strided slices and
            # their gradients (20 ops) in the graph for nothing.
            row, column = self.row_embeddings.value, self.column_embeddings.value
        else:
            row = column = None
        out = attention_ops.local_attention(
            query,
            key,
            value,
            row,
            column,
            kernel_size=k,
            dilation_rate=self.dilation_rate,
            border=self.border,
            scale=None if self.scale_logits else 1.0,
            implementation=self.implementation,
            return_attention_scores=return_attention_scores,
            select_mask=not training,
        )
        if return_attention_scores:
            out, scores = out
            scores = ops.reshape(scores, (shape[0], shape[1], shape[2], self.num_heads, k, k))
            # The window's cut rows and columns are outside the map: weight 0.
            scores = ops.pad(scores, [[0, 0]] * 4 + [[cut, cut]] * 2)
            return _pooling.downsample(out, self.strides, self.filters), scores
        return _pooling.downsample(out, self.strides, self.filters)

    def _window(self, height, width):
        """The window computed on a map of `height` x `width` (None: unknown).

        With `border="mask"`, window positions more than n - 1 pixels from the centre
        (n the larger known side) are outside the map for every pixel and get weight 0:
        the window is cut to the positions that can land inside, which computes the same
        outputs with less work (and lets a window far wider than the image run at all).
        With `border="zeros"` every position takes part, and the window is kept.
        """
        if self.border != "mask" or height is None or width is None:
            return self.kernel_size
        reach = (max(height, width) - 1) // self.dilation_rate
        return min(self.kernel_size, 2 * reach + 1)

    def compute_output_shape(self, input_shape):
        return _pooling.output_shape(input_shape, self.strides, self.filters)

    def compute_output_spec(self, inputs, return_attention_scores=False):
        outputs = keras.KerasTensor(
            self.compute_output_shape(inputs.shape), dtype=self.compute_dtype
        )
        if not return_attention_scores:
            return outputs
        k = self.kernel_size
        scores_shape = (*inputs.shape[:3], self.num_heads, k, k)
        return outputs, keras.KerasTensor(scores_shape, dtype="float32")

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "filters": self.filters,
                "kernel_size": self.kernel_size,
                "num_heads": self.num_heads,
                "strides": self.strides,
                "dilation_rate": self.dilation_rate,
                "border": self.border,
                "use_bias": self.use_bias,
                "scale_logits": self.scale_logits,
                "use_relative_position": self.use_relative_position,
                "implementation": self.implementation,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
                "bias_initializer": keras.initializers.serialize(self.bias_initializer),
                "embedding_initializer": (
                    None
                    if self.embedding_initializer is None
                    else keras.initializers.serialize(self.embedding_initializer)
                ),
                "kernel_regularizer": keras.regularizers.serialize(self.kernel_regularizer),
                "bias_regularizer": keras.regularizers.serialize(self.bias_regularizer),
                "embedding_regularizer": keras.regularizers.serialize(self.embedding_regularizer),
                "kernel_constraint": keras.constraints.serialize(self.kernel_constraint),
                "bias_constraint": keras.constraints.serialize(self.bias_constraint),
                "embedding_constraint": keras.constraints.serialize(self.embedding_constraint),
            }
        )
        return config
