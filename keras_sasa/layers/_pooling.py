"""The paper's downsampling (§3.1): attention at stride 1, then strides x strides average
pooling with "same" padding, so that sizes follow Conv2D(padding="same")."""

from keras import ops


def downsample(heads, strides, filters):
    """(batch, H, W, heads, head_size) attention output -> pooled (batch, H', W', filters)."""
    shape = ops.shape(heads)
    out = ops.reshape(heads, (shape[0], shape[1], shape[2], filters))
    if strides > 1:
        out = ops.average_pool(out, strides, strides, padding="same")
    return out


def output_shape(input_shape, strides, filters):
    def pooled(size):
        return None if size is None else -(-size // strides)

    batch, height, width, _ = input_shape
    return (batch, pooled(height), pooled(width), filters)
