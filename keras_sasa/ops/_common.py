"""Pieces shared by the local attention implementations (backend-agnostic, `keras.ops`)."""

import math

from keras import ops

from keras_sasa import _validation as check

BORDER_MODES = ("mask", "zeros")

# Added to the logits of positions that take no part in the softmax. Logits are always
# float32 here, so this is far from overflow, and exp(MASKED - max) is exactly 0.
MASKED = -1e9

# The mask of inference and the exports instead (`select_masked`): a masked logit is set to
# the window centre's logit minus this margin. Its weight is then at most exp(-20) = 2e-9 of
# the centre's, and the logits keep the range of the real ones, which int8 quantization
# calibrates on (with MASKED that range reached -1e9 and every real logit fell in one int8
# step) and on which ONNX Runtime's Softmax stays fast.
MASK_MARGIN = 20.0


def shape(x):
    """`ops.shape(x)`, as Python ints where the sizes are static. On TensorFlow,
    `ops.shape` puts a Shape op (folded to a constant) in the graph even then, and every
    op a layer adds is paid for when the training step is traced."""
    static = tuple(x.shape)
    return static if None not in static else ops.shape(x)


def select_masked(logits, inside, centre):
    """`logits` where `inside` (bool), else `centre` minus `MASK_MARGIN`; `centre` is the
    logit of a position that is never masked (the window's centre, the pixel's own key),
    broadcast against `logits`."""
    return ops.where(inside, logits, centre - MASK_MARGIN)


def check_args(kernel_size, dilation_rate, border):
    check.odd_kernel_size("kernel_size", kernel_size, type_error=ValueError)
    check.positive_int("dilation_rate", dilation_rate, type_error=ValueError)
    check.one_of("border", border, BORDER_MODES)


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
