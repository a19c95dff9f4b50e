"""SASA-ResNets: ResNets whose spatial convolutions are local self-attention.

Ramachandran et al., "Stand-Alone Self-Attention in Vision Models" (NeurIPS 2019), §3 and
§4.1: every 3x3 convolution of a bottleneck ResNet becomes a `LocalSelfAttention2D`
(k = 7, 8 heads), followed by 2x2 average pooling where the convolution had stride 2; the
stem is either the ResNet convolution stem or the attention stem with spatially-aware
values (`AttentionStem2D`). One builder, `SASAResNet`, is driven by per-group lists; the
named depths are configurations of it.
"""

import os

import keras

from keras_sasa import _validation as check
from keras_sasa._choices import STEMS
from keras_sasa.layers.attention_stem import AttentionStem2D
from keras_sasa.layers.local_attention import LocalSelfAttention2D

POOLINGS = (None, "avg", "max")
EXPANSION = 4
# Per stem: its spatial reduction, the heads of its attention layer (4 in the paper, §3.2;
# None for a convolution) and the input edge keras.applications-style defaults use.
_STEM_REDUCTION = {"attention": 4, "conv": 4, "attention_small": 1, "conv_small": 1}
_STEM_HEADS = {"attention": 4, "conv": None, "attention_small": 4, "conv_small": None}
_DEFAULT_SIZE = {"attention": 224, "conv": 224, "attention_small": 32, "conv_small": 32}
_BN_EPSILON = 1.001e-5


def stem_reduction(stem):
    """The factor by which `stem` shrinks height and width: 4 for `"attention"` and
    `"conv"` (224 -> 56), 1 for `"attention_small"` and `"conv_small"`."""
    return _STEM_REDUCTION[check.one_of("stem", stem, STEMS)]


def stem_heads(stem):
    """The number of heads of `stem`'s `AttentionStem2D`, which must divide `base_width`;
    None for the convolution stems."""
    return _STEM_HEADS[check.one_of("stem", stem, STEMS)]


def min_input_size(stem, stackwise_strides=(1, 2, 2, 2)):
    """The smallest height and width a `SASAResNet` with `stem` and these group strides
    accepts: the total downsampling (32 for the 4x stems and four groups, 8 for the small
    stems)."""
    size = stem_reduction(stem)
    for strides in stackwise_strides:
        size *= check.positive_int("stackwise_strides", strides)
    return size


def _batch_norm(name):
    return keras.layers.BatchNormalization(epsilon=_BN_EPSILON, name=name)


def _stem(x, stem, width):
    """The layers before group 1, named like keras.applications' `conv1_*`/`pool1_*`."""
    if stem == "conv":
        # ResNet: 7x7/2 convolution, batch norm, ReLU, 3x3/2 max pool (224 -> 56).
        x = keras.layers.ZeroPadding2D(3, name="conv1_pad")(x)
        x = keras.layers.Conv2D(width, 7, strides=2, use_bias=False, name="conv1_conv")(x)
        x = _batch_norm("conv1_bn")(x)
        x = keras.layers.Activation("relu", name="conv1_relu")(x)
        x = keras.layers.ZeroPadding2D(1, name="pool1_pad")(x)
        return keras.layers.MaxPooling2D(3, strides=2, name="pool1_pool")(x)
    if stem == "attention":
        # The paper (§4.1): attention within each 4x4 block of the image, batch norm, and
        # a 4x4 max pool over the same blocks (224 -> 56). No ReLU is mentioned.
        x = AttentionStem2D(
            width, kernel_size=4, num_heads=_STEM_HEADS[stem], window="block", name="conv1_attn"
        )(x)
        x = _batch_norm("conv1_bn")(x)
        return keras.layers.MaxPooling2D(4, name="pool1_pool")(x)
    if stem == "conv_small":
        x = keras.layers.Conv2D(width, 3, padding="same", use_bias=False, name="conv1_conv")(x)
        x = _batch_norm("conv1_bn")(x)
        return keras.layers.Activation("relu", name="conv1_relu")(x)
    # attention_small: the attention stem without the pool; a centred 3x3 sliding window,
    # the receptive field of conv_small's convolution.
    x = AttentionStem2D(
        width, kernel_size=3, num_heads=_STEM_HEADS[stem], window="sliding", name="conv1_attn"
    )(x)
    return _batch_norm("conv1_bn")(x)


def _bottleneck(x, filters, strides, attention, projection, name, attention_args):
    """1x1 conv -> 3x3 conv or attention (carrying the stride, as in ResNet v1.5) -> 1x1 conv."""
    shortcut = x
    if projection:
        shortcut = keras.layers.Conv2D(
            EXPANSION * filters, 1, strides=strides, use_bias=False, name=f"{name}_0_conv"
        )(x)
        shortcut = _batch_norm(f"{name}_0_bn")(shortcut)
    x = keras.layers.Conv2D(filters, 1, use_bias=False, name=f"{name}_1_conv")(x)
    x = _batch_norm(f"{name}_1_bn")(x)
    x = keras.layers.Activation("relu", name=f"{name}_1_relu")(x)
    if attention:
        # Attention at stride 1, then strides x strides average pooling (§3.1).
        window = window_size(x.shape, attention_args["kernel_size"], attention_args["border"])
        args = {**attention_args, "kernel_size": window}
        x = LocalSelfAttention2D(filters, strides=strides, name=f"{name}_attn", **args)(x)
    else:
        x = keras.layers.Conv2D(
            filters, 3, strides=strides, padding="same", use_bias=False, name=f"{name}_2_conv"
        )(x)
    x = _batch_norm(f"{name}_2_bn")(x)
    x = keras.layers.Activation("relu", name=f"{name}_2_relu")(x)
    x = keras.layers.Conv2D(EXPANSION * filters, 1, use_bias=False, name=f"{name}_3_conv")(x)
    x = _batch_norm(f"{name}_3_bn")(x)
    x = keras.layers.Add(name=f"{name}_add")([shortcut, x])
    return keras.layers.Activation("relu", name=f"{name}_out")(x)


def window_size(shape, kernel_size, border):
    """The spatial extent the attention needs on a feature map of `shape` (batch, height,
    width, channels).

    On a map of known size n (both sides), offsets beyond n - 1 reach only positions
    outside the image; with `border="mask"` those take no part in the softmax, so a
    window of 2n - 1 computes exactly what the wider one does, with fewer positions to
    score and fewer relative embeddings to store (a 7x7 window on a 2x2 map is a 3x3
    one, on a 1x1 map a 1x1 one). Zero-padded borders take part in the softmax: their
    window is kept.
    """
    sides = [size for size in shape[1:3] if size is not None]
    if border != "mask" or len(sides) < 2:
        return kernel_size
    return min(kernel_size, 2 * max(sides) - 1)


def _check_weights(weights):
    if weights is None:
        return None
    if isinstance(weights, (str, os.PathLike)) and os.path.isfile(weights):
        return weights
    raise ValueError(
        "Invalid value for argument `weights`. Expected None (random initialization) or "
        "the path to an existing weights file; there are no pretrained weights to "
        f"download. Received: weights={weights!r}"
    )


def _input_shape(input_shape, input_tensor, include_top, stem, min_size):
    if input_shape is None and input_tensor is not None:
        input_shape = tuple(input_tensor.shape[1:])
    if input_shape is None:
        size = _DEFAULT_SIZE[stem] if include_top else None
        return (size, size, 3)
    shape = tuple(input_shape)
    if len(shape) != 3 or shape[-1] is None or shape[-1] < 1:
        raise ValueError(
            "Invalid value for argument `input_shape`. Expected (height, width, channels) "
            f"with a known, positive channel count. Received: input_shape={input_shape!r}"
        )
    for size in shape[:2]:
        if size is not None and size < min_size:
            raise ValueError(
                f"Invalid value for argument `input_shape`: the input is too small. The "
                f"{stem!r} stem and the groups downsample by {min_size}, so height and "
                f"width must be at least {min_size}. Received: input_shape={input_shape!r}"
            )
    return shape


def SASAResNet(
    stackwise_num_blocks,
    stackwise_num_filters=None,
    stackwise_strides=(1, 2, 2, 2),
    include_top=True,
    weights=None,
    input_tensor=None,
    input_shape=None,
    pooling=None,
    classes=1000,
    classifier_activation="softmax",
    name="sasa_resnet",
    stem="attention",
    attention_stages=None,
    kernel_size=7,
    num_heads=8,
    base_width=64,
    border="mask",
    implementation="auto",
    use_relative_position=True,
):
    """Builds a bottleneck ResNet whose chosen groups use local self-attention.

    Group g (1-based) has `stackwise_num_blocks[g-1]` bottleneck blocks of width
    `stackwise_num_filters[g-1]` (output `4 x` that), its first block downsampling by
    `stackwise_strides[g-1]` and projecting the shortcut (1x1 conv + batch norm). Each
    block is 1x1 conv -> spatial layer -> 1x1 conv, with batch norm after each and ReLU
    after the first two and after the residual sum (ResNet v1.5: the stride sits in the
    spatial layer). The spatial layer is `LocalSelfAttention2D` in the groups listed in
    `attention_stages` (then 2x2/2 average pooling where the block downsamples, as in the
    paper) and a 3x3 convolution elsewhere. Convolutions have no biases (batch norm
    follows each).

    Layers are named like keras.applications' ResNets: `conv1_*` and `pool1_pool` for the
    stem, `conv{g+1}_block{b}_{0,1,2,3}_{conv,bn}` in the blocks (`0` is the shortcut), the
    attention layer `conv{g+1}_block{b}_attn`, then `avg_pool` and `predictions`.

    Stems (`stem`), each `base_width` channels wide:

    - `"attention"` (the paper's): `AttentionStem2D` over 4x4 blocks (4 heads, 4 value
      mixtures), batch norm, 4x4 max pool. 224 -> 56.
    - `"conv"`: 7x7/2 convolution, batch norm, ReLU, 3x3/2 max pool. 224 -> 56.
    - `"attention_small"`: `AttentionStem2D` over a sliding 3x3 window, batch norm; no
      downsampling, for 32 x 32 and smaller images.
    - `"conv_small"`: 3x3 convolution, batch norm, ReLU; no downsampling.

    Args:
        stackwise_num_blocks: blocks per group, e.g. `(3, 4, 6, 3)` for ResNet-50.
        stackwise_num_filters: bottleneck widths per group. Defaults to `base_width *
            (1, 2, 4, 8)`.
        stackwise_strides: downsampling of each group's first block. Defaults to
            `(1, 2, 2, 2)`.
        include_top, weights, input_tensor, input_shape: as in
            `keras.applications.ResNet50`, except that `weights` is None or the path of
            a weights file (there are no pretrained weights), and `input_shape` defaults
            to 224 x 224 x 3 for the `"attention"` and `"conv"` stems (32 x 32 x 3 for
            the small stems) with `include_top=True`, and to `(None, None, 3)` without.
            Height and width must be at least the total downsampling (32 for the 4x
            stems with four groups, 8 for the small stems).
        pooling, classes, classifier_activation, name: as in
            `keras.applications.ResNet50`.
        stem: one of `"attention"` (default), `"conv"`, `"attention_small"`,
            `"conv_small"`.
        attention_stages: groups (1-based) that use attention; `()` gives the
            convolutional baseline of the same depth. Defaults to None: every group.
        kernel_size, num_heads, border, implementation, use_relative_position: passed to
            every `LocalSelfAttention2D`. The paper uses k = 7, 8 heads and relative
            positions (`use_relative_position=False` is Table 5's "none").
        base_width: width of the stem and of group 1. Defaults to 64.

    Returns:
        A `keras.Model`.
    """
    num_groups = len(stackwise_num_blocks)
    base_width = check.positive_int("base_width", base_width)
    if stackwise_num_filters is None:
        stackwise_num_filters = [base_width * 2**g for g in range(num_groups)]
    if not len(stackwise_num_filters) == len(stackwise_strides) == num_groups:
        raise ValueError(
            "`stackwise_num_blocks`, `stackwise_num_filters` and `stackwise_strides` must "
            f"have one entry per group. Received: stackwise_num_blocks={stackwise_num_blocks}"
            f", stackwise_num_filters={stackwise_num_filters}, "
            f"stackwise_strides={stackwise_strides}"
        )
    for blocks in stackwise_num_blocks:
        check.positive_int("stackwise_num_blocks", blocks)
    stem = check.one_of("stem", stem, STEMS)
    kernel_size = check.odd_kernel_size("kernel_size", kernel_size)
    if attention_stages is None:
        attention_stages = range(1, num_groups + 1)
    attention_stages = check.attention_stages("attention_stages", attention_stages, num_groups)
    pooling = check.one_of("pooling", pooling, POOLINGS)
    include_top = check.boolean("include_top", include_top)
    if include_top:
        check.positive_int("classes", classes)
    weights = _check_weights(weights)
    min_size = min_input_size(stem, stackwise_strides)
    input_shape = _input_shape(input_shape, input_tensor, include_top, stem, min_size)
    attention_args = {
        "kernel_size": kernel_size,
        "num_heads": num_heads,
        "border": border,
        "implementation": implementation,
        "use_relative_position": use_relative_position,
    }

    if input_tensor is None:
        inputs = keras.Input(shape=input_shape)
    elif keras.backend.is_keras_tensor(input_tensor):
        inputs = input_tensor
    else:
        inputs = keras.Input(tensor=input_tensor, shape=input_shape)

    x = _stem(inputs, stem, base_width)
    for g, (blocks, filters, strides) in enumerate(
        zip(stackwise_num_blocks, stackwise_num_filters, stackwise_strides, strict=True), start=1
    ):
        for b in range(1, blocks + 1):
            x = _bottleneck(
                x,
                filters,
                strides if b == 1 else 1,
                attention=g in attention_stages,
                projection=b == 1,
                name=f"conv{g + 1}_block{b}",
                attention_args=attention_args,
            )

    if include_top:
        x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
        # Under mixed precision the logits and the softmax are computed in float32.
        policy = keras.mixed_precision.global_policy()
        mixed = policy.compute_dtype != policy.variable_dtype
        x = keras.layers.Dense(
            classes,
            activation=classifier_activation,
            dtype="float32" if mixed else None,
            name="predictions",
        )(x)
    elif pooling == "avg":
        x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    elif pooling == "max":
        x = keras.layers.GlobalMaxPooling2D(name="max_pool")(x)

    if input_tensor is not None:
        inputs = keras.utils.get_source_inputs(input_tensor)
    model = keras.Model(inputs, x, name=name)
    if weights is not None:
        model.load_weights(weights)
    return model


def _named(depth, stackwise_num_blocks):
    def builder(
        include_top=True,
        weights=None,
        input_tensor=None,
        input_shape=None,
        pooling=None,
        classes=1000,
        classifier_activation="softmax",
        name=f"sasa_resnet{depth}",
        *,
        stem="attention",
        attention_stages=(1, 2, 3, 4),
        kernel_size=7,
        num_heads=8,
        base_width=64,
        border="mask",
        implementation="auto",
        use_relative_position=True,
        stackwise_strides=(1, 2, 2, 2),
    ):
        return SASAResNet(
            stackwise_num_blocks,
            stackwise_strides=stackwise_strides,
            include_top=include_top,
            weights=weights,
            input_tensor=input_tensor,
            input_shape=input_shape,
            pooling=pooling,
            classes=classes,
            classifier_activation=classifier_activation,
            name=name,
            stem=stem,
            attention_stages=attention_stages,
            kernel_size=kernel_size,
            num_heads=num_heads,
            base_width=base_width,
            border=border,
            implementation=implementation,
            use_relative_position=use_relative_position,
        )

    builder.__name__ = builder.__qualname__ = f"SASAResNet{depth}"
    builder.__doc__ = (
        f"Builds SASA-ResNet-{depth}: `SASAResNet` with {list(stackwise_num_blocks)} "
        "bottleneck blocks per group.\n\n"
        "    Arguments as in `SASAResNet` (the keras.applications ones, then `stem`,\n"
        "    `attention_stages`, `kernel_size`, `num_heads`, `base_width`, `border`,\n"
        "    `implementation`, `use_relative_position`, `stackwise_strides`). The defaults\n"
        "    give the paper's full-attention model.\n"
    )
    return builder


# The paper's depths (§4.1): ResNet-38 and -26 drop 1 and 2 blocks from every group of
# ResNet-50; 101 and 152 are the standard ResNet configurations.
SASAResNet26 = _named(26, (1, 2, 4, 1))
SASAResNet38 = _named(38, (2, 3, 5, 2))
SASAResNet50 = _named(50, (3, 4, 6, 3))
SASAResNet101 = _named(101, (3, 4, 23, 3))
SASAResNet152 = _named(152, (3, 8, 36, 3))
