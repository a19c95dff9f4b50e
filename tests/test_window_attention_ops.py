"""The attention functions in keras_sasa.ops against the paper's equation, pixel by pixel."""

import functools

import numpy as np
import pytest
from keras import ops

from backend import BACKEND
from backend import gradients
from backend import jit
from backend import numpy
from backend import run
from keras_sasa.ops import window_attention as wa
from numpy_reference import local_attention_loops

# The blocked implementation twice: with the additive mask and hand-written gradient that
# training runs, and with the select mask of inference and the exports.
OPS = {
    "reference": wa.local_attention_reference,
    "blocked": wa.local_attention_blocked,
    "blocked_select": functools.partial(wa.local_attention_blocked, select_mask=True),
}


def random_inputs(seed, batch, height, width, heads, key_dim, kernel_size, value_dim=None):
    rng = np.random.default_rng(seed)
    value_dim = value_dim or key_dim
    row_dim = (key_dim + 1) // 2

    def normal(*shape):
        return rng.normal(size=shape).astype("float32")

    return (
        normal(batch, height, width, heads, key_dim),
        normal(batch, height, width, heads, key_dim),
        normal(batch, height, width, heads, value_dim),
        normal(kernel_size, heads, row_dim),
        normal(kernel_size, heads, key_dim - row_dim),
    )


# (batch, height, width, heads, key_dim, kernel_size, dilation, border)
CASES = [
    (2, 5, 7, 2, 4, 3, 1, "mask"),
    (1, 9, 6, 2, 3, 5, 2, "zeros"),
    (1, 11, 13, 1, 6, 7, 1, "mask"),
    (1, 11, 13, 1, 6, 7, 1, "zeros"),
    (1, 3, 4, 2, 2, 7, 1, "mask"),  # image smaller than the window
    (1, 3, 4, 2, 2, 7, 1, "zeros"),
    (2, 10, 9, 2, 5, 3, 3, "mask"),
    (1, 12, 12, 4, 2, 9, 1, "zeros"),
    (1, 6, 5, 3, 1, 5, 1, "mask"),  # head size 1: no column channels
    (1, 8, 8, 2, 4, 1, 1, "mask"),  # kernel_size 1: attends to itself only
    (1, 11, 6, 1, 6, 3, 2, "mask"),  # one head over several dilation grids
    (1, 11, 6, 1, 6, 3, 2, "zeros"),
]


@pytest.mark.parametrize("case", CASES, ids=str)
@pytest.mark.parametrize("fn", OPS)
def test_matches_paper_equation(case, fn):
    batch, height, width, heads, key_dim, k, dilation, border = case
    q, key, v, rows, cols = random_inputs(0, batch, height, width, heads, key_dim, k, key_dim + 1)
    expected = local_attention_loops(q, key, v, rows, cols, k, dilation, border)
    op = OPS[fn]
    got = run(lambda *t: op(*t, k, dilation_rate=dilation, border=border), q, key, v, rows, cols)
    np.testing.assert_allclose(got, expected, atol=1e-5)


@pytest.mark.parametrize("block_size", [2, 3, 4, 5, 8])
@pytest.mark.parametrize("border", ["mask", "zeros"])
@pytest.mark.parametrize("select_mask", [False, True])
def test_blocked_is_exact_for_every_block_size(block_size, border, select_mask):
    # 11 x 10 is divisible by none of the blocks but 5 and 2; kernel 7 needs a halo of 3,
    # wider than blocks 2 and 3.
    q, key, v, rows, cols = random_inputs(1, 1, 11, 10, 2, 3, 7)
    expected = local_attention_loops(q, key, v, rows, cols, 7, 1, border)
    got = run(
        lambda *t: wa.local_attention_blocked(
            *t, 7, border=border, block_size=block_size, select_mask=select_mask
        ),
        q,
        key,
        v,
        rows,
        cols,
    )
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_unscaled_logits_match_the_paper_without_scale():
    q, key, v, rows, cols = random_inputs(2, 1, 6, 6, 2, 4, 3)
    expected = local_attention_loops(q, key, v, rows, cols, 3, scale=1.0)
    for op in OPS.values():
        got = run(lambda *t, op=op: op(*t, 3, scale=1.0), q, key, v, rows, cols)
        np.testing.assert_allclose(got, expected, atol=1e-5)


@pytest.mark.parametrize("border", ["mask", "zeros"])
def test_select_mask_holds_when_masked_logits_would_win(border):
    # scale 1 (scale_logits=False), positive queries, keys of both signs and 8 times the
    # usual size: logits spread over hundreds, so that keys of each block's memory outside
    # a query's window (other pixels', and with "mask" the zeros outside the image) often
    # score far above the window's own. The select mask must still give them weight 0.
    q, key, v, rows, cols = random_inputs(8, 1, 9, 8, 2, 4, 5)
    q, key = 8.0 * np.abs(q), 8.0 * key
    expected = local_attention_loops(q, key, v, rows, cols, 5, 1, border, scale=1.0)
    for select_mask in (False, True):
        got = run(
            lambda *t, select_mask=select_mask: wa.local_attention_blocked(
                *t, 5, border=border, scale=1.0, select_mask=select_mask
            ),
            q,
            key,
            v,
            rows,
            cols,
        )
        np.testing.assert_allclose(got, expected, atol=1e-5)


@pytest.mark.parametrize(
    "head_groups, row_bands, dilation, border, relative",
    [
        (2, 1, 1, "mask", True),
        (4, 1, 2, "zeros", True),
        (4, 1, 1, "mask", False),
        (1, 3, 1, "mask", True),  # 4 block rows in bands of 1, 1 and 2
        (2, 2, 2, "zeros", True),
        (4, 3, 1, "zeros", False),
    ],
)
def test_chunks_are_exact(head_groups, row_bands, dilation, border, relative):
    # The heads attended in groups, and each group's blocks in bands of block rows, one
    # chunk after the other, give every query its own output; 4 heads of distinct inputs
    # on 15 x 10 pixels (4 rows of 4 x 4 blocks, the last one cut by the border), so that
    # a chunk reading another's heads or rows would fail.
    q, key, v, rows, cols = random_inputs(9, 2, 15, 10, 4, 4, 5)
    if not relative:
        rows, cols = 0 * rows, 0 * cols
    expected = local_attention_loops(q, key, v, rows, cols, 5, dilation, border)

    def attend(q, k, v, *tables):
        return wa.local_attention_blocked(
            q,
            k,
            v,
            *(tables or (None, None)),
            5,
            dilation_rate=dilation,
            border=border,
            block_size=4 if dilation == 1 else 2,
            select_mask=True,
            head_groups=head_groups,
            row_bands=row_bands,
        )

    got = run(attend, q, key, v, *((rows, cols) if relative else ()))
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_default_chunks():
    # Logits per image and head: (blocks) x (b*b) x (b + k - 1)^2 x 4 bytes.
    # 56 x 56, k = 7, b = 4: 196 x 16 x 100 x 4 = 1 254 400 B per head: a group per head,
    # and 3 bands of the 14 block rows (418 KB each).
    assert wa.default_chunks(56, 56, 7, 8) == (8, 3)
    # 14 x 14, b = 4 (4 x 4 blocks, padded): 102 400 B per head, 819 200 for 8: 2 groups.
    assert wa.default_chunks(14, 14, 7, 8) == (2, 1)
    # 7 x 7 (b = 7, 1 block, 49 x 169 x 4 = 33 124 B per head): one chunk.
    assert wa.default_chunks(7, 7, 7, 8) == (1, 1)
    # 28 x 28 with 6 heads (313 600 B each): 4 groups do not divide 6; 6 is next.
    assert wa.default_chunks(28, 28, 7, 6) == (6, 1)
    assert wa.default_chunks(None, 56, 7, 8) == (1, 1)


@pytest.mark.parametrize(
    "chunks, message",
    [
        ({"head_groups": 3}, "`head_groups`.*head_groups=3"),
        ({"head_groups": 0}, "`head_groups`.*head_groups=0"),
        ({"row_bands": 3}, r"`row_bands`.*rows \(2\).*row_bands=3"),
        ({"row_bands": 0}, "`row_bands`.*row_bands=0"),
    ],
)
def test_chunks_are_checked(chunks, message):
    # 5 x 5 pixels, k = 3: blocks of 3 (`default_block_size`), 2 block rows.
    q, key, v, rows, cols = random_inputs(9, 1, 5, 5, 4, 4, 3)
    with pytest.raises(ValueError, match=message):
        wa.local_attention_blocked(q, key, v, rows, cols, 3, select_mask=True, **chunks)


def test_no_positional_term_equals_zero_tables():
    q, key, v, rows, cols = random_inputs(3, 1, 7, 5, 2, 4, 5)
    expected = local_attention_loops(q, key, v, 0 * rows, 0 * cols, 5)
    for op in OPS.values():
        got = run(lambda q, k, v, op=op: op(q, k, v, None, None, 5), q, key, v)
        np.testing.assert_allclose(got, expected, atol=1e-5)


@pytest.mark.parametrize(
    "implementation, select_mask", [("reference", False), ("blocked", False), ("blocked", True)]
)
def test_unknown_spatial_sizes(implementation, select_mask):
    # One compiled function for every size: on TensorFlow a graph whose height and width
    # are unknown (None) when it is traced; JAX traces each size.
    def attend(q, k, v, r, c):
        return wa.local_attention(
            q,
            k,
            v,
            r,
            c,
            5,
            dilation_rate=2,
            implementation=implementation,
            select_mask=select_mask,
        )

    if BACKEND == "tensorflow":
        import tensorflow as tf

        spec = tf.TensorSpec([None, None, None, 2, 4], tf.float32)
        table = tf.TensorSpec([5, 2, 2], tf.float32)
        fn = tf.function(attend, input_signature=[spec, spec, spec, table, table])
    else:
        fn = jit(attend)
    for height, width in [(7, 9), (4, 3), (12, 5)]:
        q, key, v, rows, cols = random_inputs(4, 2, height, width, 2, 4, 5)
        expected = local_attention_loops(q, key, v, rows, cols, 5, 2)
        np.testing.assert_allclose(numpy(fn(q, key, v, rows, cols)), expected, atol=1e-5)


def test_corner_pixel_puts_no_weight_on_padding():
    q, key, v, rows, cols = random_inputs(5, 1, 6, 6, 1, 2, 5)

    def weights(border):
        def attend(*t):
            return wa.local_attention_reference(*t, 5, border=border, return_attention_scores=True)[
                1
            ]

        return run(attend, q, key, v, rows, cols)

    corner = weights("mask")[0, 0, 0, 0].reshape(5, 5)
    assert corner[:2].sum() == 0.0 and corner[:, :2].sum() == 0.0
    np.testing.assert_allclose(corner[2:, 2:].sum(), 1.0, rtol=1e-6)
    assert weights("zeros")[0, 0, 0, 0].reshape(5, 5)[:2].sum() > 0.0


@pytest.mark.parametrize(
    "border, dilation_rate, relative, jit_compile, select_mask",
    [
        ("mask", 1, True, False, False),
        ("zeros", 2, True, False, False),
        ("mask", 1, False, False, False),
        ("mask", 2, True, True, False),
        ("zeros", 1, False, True, False),
        ("mask", 2, True, False, True),
        ("zeros", 1, True, True, True),
    ],
)
def test_gradients_match_reference(border, dilation_rate, relative, jit_compile, select_mask):
    # The blocked path's gradient (hand-written; autodiff of the select mask) against the
    # reference's autodiff, for every input: queries, keys, values and (with relative
    # logits) both tables.
    inputs = random_inputs(6, 1, 9, 7, 2, 4, 5)
    if not relative:
        inputs = inputs[:3]

    def grads(op):
        def loss(*tensors):
            tables = tensors[3:] if relative else (None, None)
            out = op(*tensors[:3], *tables, 5, dilation_rate=dilation_rate, border=border)
            return ops.sum(ops.sin(out))

        return gradients(loss, inputs, jit_compile=jit_compile)

    blocked = functools.partial(wa.local_attention_blocked, select_mask=select_mask)
    fast, reference = grads(blocked), grads(wa.local_attention_reference)
    assert len(fast) == len(inputs)
    for got, expected in zip(fast, reference, strict=True):
        np.testing.assert_allclose(got, expected, atol=1e-5)


def test_gradients_match_reference_when_values_are_wider_than_keys():
    # The hand-written gradient with values wider than keys (the other gradient tests'
    # values are as wide as their keys).
    inputs = random_inputs(8, 1, 9, 7, 2, 4, 5, value_dim=6)

    def grads(op):
        return gradients(lambda *t: ops.sum(ops.sin(op(*t, 5))), inputs)

    fast, reference = grads(wa.local_attention_blocked), grads(wa.local_attention_reference)
    for got, expected in zip(fast, reference, strict=True):
        np.testing.assert_allclose(got, expected, atol=1e-5)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"kernel_size": 4}, "kernel_size=4"),
        ({"kernel_size": 0}, "kernel_size=0"),
        ({"dilation_rate": 0}, "dilation_rate=0"),
        ({"border": "reflect"}, "border='reflect'"),
        ({"implementation": "fast"}, "implementation='fast'"),
    ],
)
def test_bad_arguments(kwargs, match):
    q, key, v, rows, cols = random_inputs(7, 1, 4, 4, 1, 2, 3)
    args = {"kernel_size": 3, **kwargs}
    with pytest.raises(ValueError, match=match):
        wa.local_attention(q, key, v, rows, cols, **args)
