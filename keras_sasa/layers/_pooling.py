"""The paper's downsampling (§3.1): attention at stride 1, then strides x strides average
pooling with "same" padding, so that sizes follow Conv2D(padding="same")."""

import keras
from keras import ops

from keras_sasa.ops._common import shape as static_shape


def downsample(heads, strides, filters):
    """(batch, H, W, heads, head_size) attention output -> pooled (batch, H', W', filters)."""
    shape = static_shape(heads)
    out = ops.reshape(heads, (-1, shape[1], shape[2], filters))
    if strides > 1:
        if keras.backend.backend() == "torch":
            return _average_pool_same_by_hand(out, strides)
        out = ops.average_pool(out, strides, strides, padding="same")
    return out


def _average_pool_same_by_hand(x, strides):
    """`average_pool(padding="same")` as TensorFlow and JAX compute it: the padding split
    as (total // 2 before, the rest after) and left out of the averages. PyTorch's backend
    places and counts the padding differently. Shapes are static there."""
    paddings = [[0, 0]]
    for size in x.shape[1:3]:
        total = -(-size // strides) * strides - size
        paddings.append([total // 2, total - total // 2])
    paddings.append([0, 0])
    ones = ops.pad(ops.ones_like(x[..., :1]), paddings)
    sums = ops.average_pool(ops.pad(x, paddings), strides, strides, padding="valid")
    return sums / ops.average_pool(ones, strides, strides, padding="valid")


def output_shape(input_shape, strides, filters):
    def pooled(size):
        return None if size is None else -(-size // strides)

    batch, height, width, _ = input_shape
    return (batch, pooled(height), pooled(width), filters)
