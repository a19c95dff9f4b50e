"""TensorFlow bugs that keras_sasa works around, reproduced so that each workaround can go
when a release fixes its bug (docs/design.md).

tensorflow/tensorflow#117700: on CPU with oneDNN (the default on x86), `tf.matmul` of a
rank-4 tensor with a size-1 batch dimension and a lower-rank tensor broadcast against it
gives wrong numbers or corrupts the heap. `keras_sasa/ops/blocked.py` broadcasts its
relative tables by hand instead.
"""

import os
import platform
import subprocess
import sys

import keras
import numpy as np
import pytest

# The shapes of the blocked implementation's relative logits with one head over four
# dilation grids: queries (grids, heads, positions, key_dim), tables (heads, key_dim, 2k).
QUERIES, TABLES = (4, 1, 16, 2), (1, 2, 2)

BROADCAST_MATMUL = f"""
import numpy as np
import tensorflow as tf
rng = np.random.default_rng(0)
a = rng.normal(size={QUERIES}).astype("float32")
b = rng.normal(size={TABLES}).astype("float32")
print(np.abs(tf.matmul(a, b).numpy() - a @ b).max())
"""

pytestmark = pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="a TensorFlow bug")


@pytest.mark.slow
@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="oneDNN on x86")
def test_tf_broadcasting_batch_matmul_is_still_wrong():
    """Fails once TensorFlow computes this product right: then drop the workaround."""
    env = {**os.environ, "TF_ENABLE_ONEDNN_OPTS": "1", "TF_CPP_MIN_LOG_LEVEL": "3"}
    result = subprocess.run(
        [sys.executable, "-c", BROADCAST_MATMUL], env=env, capture_output=True, text=True
    )
    # The bug shows as wrong numbers or as a process killed (by a signal) by the
    # corrupted heap; a Python error is no reproduction.
    if result.returncode == 0:
        assert float(result.stdout.split()[-1]) > 1e-3
    else:
        assert result.returncode < 0, result.stderr[-2000:]


def test_broadcast_by_hand_matmul_equals_numpy():
    import tensorflow as tf

    rng = np.random.default_rng(0)
    a = rng.normal(size=QUERIES).astype("float32")
    b = rng.normal(size=TABLES).astype("float32")
    got = tf.matmul(a, tf.broadcast_to(b, (*QUERIES[:2], *TABLES[1:]))).numpy()
    np.testing.assert_allclose(got, a @ b, rtol=1e-6, atol=1e-6)
