"""Pieces shared by the local attention implementations (backend-agnostic, `keras.ops`)."""

import math

from keras import ops

BORDER_MODES = ("mask", "zeros")

# Added to the logits of positions that take no part in the softmax. Logits are always
# float32 here, so this is far from overflow, and exp(MASKED - max) is exactly 0.
MASKED = -1e9


def check_args(kernel_size, dilation_rate, border):
    if not isinstance(kernel_size, int) or kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(
            "Invalid value for argument `kernel_size`. Expected a positive odd integer. "
            f"Received kernel_size={kernel_size}"
        )
    if not isinstance(dilation_rate, int) or dilation_rate < 1:
        raise ValueError(
            "Invalid value for argument `dilation_rate`. Expected an integer >= 1. "
            f"Received dilation_rate={dilation_rate}"
        )
    if border not in BORDER_MODES:
        raise ValueError(
            f"Invalid value for argument `border`. Expected one of {BORDER_MODES}. "
            f"Received border={border!r}"
        )


def logit_scale(scale, key_dim):
    return 1.0 / math.sqrt(key_dim) if scale is None else float(scale)


def split_query(query, row_embeddings):
    # A split, not two slices: on TensorFlow its gradient is one concat, far cheaper than
    # a strided slice's.
    return ops.split(query, [row_embeddings.shape[-1]], axis=-1)


def softmax_last(logits):
    # TF's CPU Softmax kernel takes at most 5 dimensions: work on a matrix.
    shape = ops.shape(logits)
    probs = ops.softmax(ops.reshape(logits, (-1, shape[-1])), axis=-1)
    return ops.reshape(probs, shape)
