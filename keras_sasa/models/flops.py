"""FLOPs of one image's forward pass, counted from a built model's layers.

Convention (the paper's, footnote 4): a multiply-add is 2 FLOPs. Only the layers that
multiply activations by weights or by other activations are counted: convolutions,
dense layers and the attention layers. Biases, batch norm, activations, pooling, the
residual additions and the softmax's exponentials count 0, as in the usual ResNet figures
(ResNet-50: 4.1 G multiply-adds, the paper's 8.2 GFLOPs).
"""

import math

import keras

from keras_sasa import _validation as check
from keras_sasa.layers.attention_stem import AttentionStem2D
from keras_sasa.layers.local_attention import LocalSelfAttention2D


def _pixels(shape, layer):
    height, width = shape[1], shape[2]
    if height is None or width is None:
        raise ValueError(
            "count_flops needs known heights and widths; build the model with a fixed "
            f"input_shape. Layer {layer.name!r} has input shape {tuple(shape)}"
        )
    return height * width


def _conv2d(layer):
    out = layer.output.shape
    kh, kw = layer.kernel_size
    channels_in = layer.input.shape[-1] // layer.groups
    return 2 * kh * kw * channels_in * layer.filters * _pixels(out, layer)


def _depthwise_conv2d(layer):
    out = layer.output.shape
    kh, kw = layer.kernel_size
    return 2 * kh * kw * out[-1] * _pixels(out, layer)


def _dense(layer):
    shape = layer.input.shape
    if any(size is None for size in shape[1:-1]):
        raise ValueError(
            "count_flops needs known input sizes. Layer "
            f"{layer.name!r} has input shape {tuple(shape)}"
        )
    return 2 * shape[-1] * layer.units * math.prod(shape[1:-1])


def _local_self_attention(layer):
    """Per pixel, at stride 1 (the pooling after it is not counted): the q/k/v
    projections and, for each of the k*k window positions, q.k, q.r and the weighted value.

    q.r is counted as the paper's eq. 3 writes it, once per window position (k*k*F). A
    factorized implementation needs only k*F (each head's row and column halves against
    the k row and k column offsets, then broadcast-added), but the paper's FLOPs follow
    the literal count (tests/test_models.py compares both tables; the figures are in
    docs/design.md).
    """
    shape = layer.input.shape
    channels, filters, k = shape[-1], layer.filters, layer.kernel_size
    logit_terms = 2 if layer.use_relative_position else 1
    per_pixel = 3 * channels * filters + (logit_terms + 1) * k * k * filters
    return 2 * per_pixel * _pixels(shape, layer)


def _attention_stem(layer):
    """Per pixel: the q/k projections, the value projection (one mixed matrix per pixel
    with `window="block"`, one per window position with `"sliding"`, where a pixel's value
    differs from one query to the next), q.k and the weighted sum over the k*k window;
    once per image, the mixture weights and the k*k mixed value matrices."""
    shape = layer.input.shape
    channels, filters, k = shape[-1], layer.filters, layer.kernel_size
    mixtures = layer.num_mixtures
    values = channels * filters * (1 if layer.window == "block" else k * k)
    per_pixel = 2 * channels * filters + values + 2 * k * k * filters
    per_image = k * k * mixtures * (filters + channels * filters)
    return 2 * (per_pixel * _pixels(shape, layer) + per_image)


_COUNTERS = (
    (AttentionStem2D, _attention_stem),
    (LocalSelfAttention2D, _local_self_attention),
    (keras.layers.DepthwiseConv2D, _depthwise_conv2d),
    (keras.layers.Conv2D, _conv2d),
    (keras.layers.Dense, _dense),
)


def _layer_flops(layer):
    if isinstance(layer, keras.Model):
        return sum(_layer_flops(inner) for inner in layer.layers)
    for cls, counter in _COUNTERS:
        if isinstance(layer, cls):
            return counter(layer)
    return 0


def count_flops(model):
    """FLOPs of one image's forward pass through a built `keras.Model`.

    Walks the model's layers (recursing into nested models) and counts, from the shapes
    they were built with: `Conv2D` (2 * kh * kw * C_in/groups * C_out per output pixel),
    `DepthwiseConv2D`, `Dense`, `LocalSelfAttention2D` (per input pixel: projections
    3 * C * F, then q.k, q.r and the weighted sum for each of the k*k window positions,
    3 * k*k * F) and `AttentionStem2D`. A multiply-add is 2 FLOPs; biases, batch norm,
    activations, pooling and additions are not counted. Heights and widths must be known. A layer is
    counted once, at the shapes of its first call (the builders of this package call every
    layer once; a layer shared between several calls would be undercounted).

    Args:
        model: a built `keras.Model`.

    Returns:
        An `int`: FLOPs for one image (the batch dimension is ignored).
    """
    if not isinstance(model, keras.Model):
        raise check.error("model", model, "Expected a keras.Model", TypeError)
    return int(sum(_layer_flops(layer) for layer in model.layers))
