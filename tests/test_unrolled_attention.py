"""The unrolled (export) implementation against the paper's equation and the reference."""

import numpy as np
import pytest

from backend import call
from keras_sasa.ops import window_attention as wa
from numpy_reference import local_attention_loops
from test_window_attention_ops import CASES
from test_window_attention_ops import random_inputs


@pytest.mark.parametrize("case", CASES, ids=str)
def test_unrolled_matches_paper_equation(case):
    batch, height, width, heads, key_dim, k, dilation, border = case
    q, key, v, rows, cols = random_inputs(0, batch, height, width, heads, key_dim, k, key_dim + 1)
    expected = local_attention_loops(q, key, v, rows, cols, k, dilation, border)
    got = call(
        wa.local_attention_unrolled,
        (q, key, v, rows, cols),
        k,
        dilation_rate=dilation,
        border=border,
    )
    np.testing.assert_allclose(got, expected, atol=1e-5)


@pytest.mark.parametrize("case", CASES[:8], ids=str)
def test_unrolled_weights_equal_reference_weights(case):
    batch, height, width, heads, key_dim, k, dilation, border = case
    args = random_inputs(1, batch, height, width, heads, key_dim, k)
    kwargs = dict(dilation_rate=dilation, border=border, return_attention_scores=True)
    out, weights = call(wa.local_attention_unrolled, args, k, **kwargs)
    ref_out, ref_weights = call(wa.local_attention_reference, args, k, **kwargs)
    assert weights.shape == (batch, height, width, heads, k * k)
    np.testing.assert_allclose(weights, ref_weights, atol=1e-5)
    np.testing.assert_allclose(out, ref_out, atol=1e-5)


def test_unrolled_without_relative_tables_or_with_unit_scale():
    q, key, v, _, _ = random_inputs(2, 1, 6, 7, 2, 4, 5)
    rows, cols = np.zeros((5, 2, 2), "float32"), np.zeros((5, 2, 2), "float32")
    expected = local_attention_loops(q, key, v, rows, cols, 5, 1, "mask", scale=1.0)
    got = call(wa.local_attention_unrolled, (q, key, v), None, None, 5, scale=1.0)
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_masked_weights_sum_to_one_and_are_zero_outside_the_image():
    args = random_inputs(3, 1, 6, 5, 2, 4, 3)
    _, weights = call(wa.local_attention_unrolled, args, 3, return_attention_scores=True)
    weights = weights.reshape(1, 6, 5, 2, 3, 3)
    np.testing.assert_allclose(weights.sum(axis=(-1, -2)), 1.0, atol=1e-6)
    # Top-left corner: row offset -1 and column offset -1 fall outside the image.
    corner = weights[0, 0, 0]
    np.testing.assert_array_equal(corner[:, 0, :], 0.0)
    np.testing.assert_array_equal(corner[:, :, 0], 0.0)
    assert (corner[:, 1:, 1:] > 0).all()
    # Bottom-right corner: offsets +1 fall outside.
    np.testing.assert_array_equal(weights[0, 5, 4][:, 2, :], 0.0)
    np.testing.assert_array_equal(weights[0, 5, 4][:, :, 2], 0.0)
    # An interior pixel uses its whole window.
    assert (weights[0, 3, 2] > 0).all()


def test_zeros_border_gives_weight_outside_the_image():
    args = random_inputs(4, 1, 5, 5, 1, 2, 3)
    _, weights = call(
        wa.local_attention_unrolled, args, 3, border="zeros", return_attention_scores=True
    )
    corner = weights[0, 0, 0, 0].reshape(3, 3)
    assert (corner > 0).all()
    np.testing.assert_allclose(corner.sum(), 1.0, atol=1e-6)


def test_unscaled_logits_mask_the_border_where_outside_positions_would_win():
    # scale 1 (scale_logits=False), positive queries and negative keys: the positions
    # outside the image, whose keys are zeros, get logits 30 to 80 above the real ones, more
    # than a fixed bounded constant such as -30 would take away.
    q, key, v, rows, cols = random_inputs(6, 1, 5, 6, 2, 4, 3)
    q, key = 6.0 * np.abs(q), -6.0 * np.abs(key)
    expected = local_attention_loops(q, key, v, rows, cols, 3, 1, "mask", scale=1.0)
    out, weights = call(
        wa.local_attention_unrolled,
        (q, key, v, rows, cols),
        3,
        scale=1.0,
        return_attention_scores=True,
    )
    np.testing.assert_allclose(out, expected, atol=1e-5)
    corner = weights[0, 0, 0].reshape(2, 3, 3)
    np.testing.assert_array_equal(corner[:, 0, :], 0.0)
    np.testing.assert_array_equal(corner[:, :, 0], 0.0)
    np.testing.assert_allclose(weights.sum(-1), 1.0, atol=1e-6)


@pytest.mark.parametrize("implementation", ["auto", "blocked", "unrolled", "reference"])
def test_dispatcher_returns_weights_with_the_same_outputs(implementation):
    args = random_inputs(5, 2, 7, 6, 2, 4, 5)
    kwargs = dict(dilation_rate=2, implementation=implementation)
    plain = call(wa.local_attention, args, 5, **kwargs)
    out, weights = call(wa.local_attention, args, 5, return_attention_scores=True, **kwargs)
    np.testing.assert_allclose(out, plain, atol=1e-5)
    np.testing.assert_allclose(weights.sum(-1), 1.0, atol=1e-6)


def test_unrolled_rejects_bad_arguments():
    args = random_inputs(0, 1, 4, 4, 1, 2, 3)
    with pytest.raises(ValueError, match="kernel_size=4"):
        wa.local_attention_unrolled(*args, 4)
    with pytest.raises(ValueError, match="dilation_rate=0"):
        wa.local_attention_unrolled(*args, 3, dilation_rate=0)
    with pytest.raises(ValueError, match="border='same'"):
        wa.local_attention_unrolled(*args, 3, border="same")
    with pytest.raises(ValueError, match="row_embeddings"):
        wa.local_attention_unrolled(*args[:3], args[3], None, 3)
