"""AttentionStem2D and its op: the attention stem with spatially-aware values (paper §3.2,
A.1)."""

import keras
import numpy as np
import pytest
from keras import ops

import keras_sasa
import layer_contract
from backend import call
from backend import gradients
from backend import numpy
from keras_sasa.ops import stem as stem_ops
from stem_reference import attention_stem_loops
from stem_reference import window_members


def _stem(**kwargs):
    kwargs.setdefault("embedding_initializer", keras.initializers.RandomNormal(stddev=1.0))
    return keras_sasa.AttentionStem2D(**kwargs)


def _weights(layer):
    names = (
        "query_kernel",
        "key_kernel",
        "value_kernels",
        "row_embeddings",
        "column_embeddings",
        "mixture_embeddings",
    )
    return [numpy(getattr(layer, n).value).astype("float64") for n in names]


def _random_weights(channels, filters, num_mixtures, kernel_size, seed):
    """W_Q, W_K, the W_V^m, emb_row, emb_col and the nu_m, in the op's argument order."""
    rng = np.random.default_rng(seed)
    shapes = [
        (channels, filters),
        (channels, filters),
        (num_mixtures, channels, filters),
        (kernel_size, filters),
        (kernel_size, filters),
        (num_mixtures, filters),
    ]
    return [rng.normal(size=shape).astype("float32") for shape in shapes]


@pytest.mark.parametrize("window", ["block", "sliding"])
@pytest.mark.parametrize(
    "height, width, kernel_size", [(5, 7, 4), (8, 8, 4), (6, 5, 3), (4, 6, 2), (3, 3, 5)]
)
def test_op_matches_numpy_loop_reference(window, height, width, kernel_size):
    x = np.random.default_rng(1).normal(size=(2, height, width, 3)).astype("float32")
    weights = _random_weights(3, 8, 3, kernel_size, seed=kernel_size)
    got = call(
        stem_ops.attention_stem, [x, *weights], num_heads=2, kernel_size=kernel_size, window=window
    )
    assert got.shape == (2, height, width, 2, 4)
    want = attention_stem_loops(
        x.astype("float64"),
        *[w.astype("float64") for w in weights],
        num_heads=2,
        kernel_size=kernel_size,
        window=window,
    )
    np.testing.assert_allclose(got.reshape(want.shape), want, atol=1e-5, rtol=0)


def test_op_rejects_an_unknown_window():
    x = np.zeros((1, 4, 4, 3), "float32")
    with pytest.raises(ValueError, match="window='global'"):
        stem_ops.attention_stem(x, *_random_weights(3, 8, 2, 4, 0), 2, 4, window="global")


@pytest.mark.parametrize("window", ["block", "sliding"])
def test_layer_matches_numpy_loop_reference(window):
    x = np.random.default_rng(1).normal(size=(2, 5, 7, 3)).astype("float32")
    layer = _stem(filters=8, kernel_size=4, num_heads=2, num_mixtures=3, window=window)
    got = numpy(layer(x))
    want = attention_stem_loops(
        x.astype("float64"), *_weights(layer), num_heads=2, kernel_size=4, window=window
    )
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)


@pytest.mark.parametrize("window", ["block", "sliding"])
def test_unscaled_logits_match_reference(window):
    x = np.random.default_rng(2).normal(size=(1, 6, 6, 4)).astype("float32")
    layer = _stem(filters=8, num_heads=4, window=window, scale_logits=False)
    got = numpy(layer(x))
    want = attention_stem_loops(
        x.astype("float64"), *_weights(layer), num_heads=4, kernel_size=4, window=window, scale=1.0
    )
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)


@pytest.mark.parametrize("window", ["block", "sliding"])
def test_training_and_inference_masks_agree_where_padding_would_win(window):
    # Unscaled logits of positive queries against negative keys: the zero keys of the
    # padding outside the image score far above every real one, so the masks must hold.
    # Training adds -1e9; inference selects the pixel's own logit minus 20 (bounded).
    x = np.abs(np.random.default_rng(3).normal(size=(1, 7, 6, 4))).astype("float32")
    layer = _stem(filters=8, kernel_size=4, num_heads=2, window=window, scale_logits=False)
    layer.build(x.shape)
    layer.query_kernel.assign(8.0 * np.abs(numpy(layer.query_kernel)))
    layer.key_kernel.assign(-8.0 * np.abs(numpy(layer.key_kernel)))
    want = attention_stem_loops(
        x.astype("float64"), *_weights(layer), num_heads=2, kernel_size=4, window=window, scale=1.0
    )
    for training in (True, False):
        np.testing.assert_allclose(numpy(layer(x, training=training)), want, atol=1e-5, rtol=0)


def test_sliding_window_offsets_follow_conv2d_same_padding():
    # k = 4: rows/columns -1..+2 around the pixel; k = 3: centred.
    assert [a for a, _, _, _ in window_members(5, 5, 20, 20, 4, "sliding")][::4] == [4, 5, 6, 7]
    assert stem_ops.sliding_window_offsets(4) == [-1, 0, 1, 2]
    assert stem_ops.sliding_window_offsets(3) == [-1, 0, 1]


@pytest.mark.parametrize("window", ["block", "sliding"])
@pytest.mark.parametrize("pixel", [(0, 0), (3, 4), (6, 2), (9, 9)])
def test_output_pixel_depends_exactly_on_its_window(window, pixel):
    """The receptive field of output ij is its window, clipped to the image: nothing
    outside the image, nor beyond the window, takes part."""
    height = width = 10
    x = np.random.default_rng(3).normal(size=(1, height, width, 3)).astype("float32")
    layer = _stem(filters=8, kernel_size=4, num_heads=2, window=window)
    layer.build(x.shape)

    def total(x):
        return ops.sum(layer(x)[0, pixel[0], pixel[1]] * ops.arange(1.0, 9.0))

    (grad,) = gradients(total, [x])
    grad = np.abs(grad[0]).sum(-1)
    expected = np.zeros((height, width), bool)
    for a, b, _, _ in window_members(*pixel, height, width, 4, window):
        expected[a, b] = True
    np.testing.assert_array_equal(grad > 0, expected)


def test_block_window_is_aligned_with_the_max_pool():
    """With window="block", a 4x4 max pool after the stem sees each block exactly once:
    changing one block of the image changes one pooled output pixel only."""
    x = np.random.default_rng(4).normal(size=(1, 8, 12, 3)).astype("float32")
    layer = _stem(filters=8, kernel_size=4, num_heads=2)
    pool = keras.layers.MaxPooling2D(4)
    changed = x.copy()
    changed[0, 4:8, 4:8] += 1.0
    diff = np.abs(numpy(pool(layer(changed)) - pool(layer(x)))).sum(-1)
    np.testing.assert_array_equal(diff[0] > 0, [[False, False, False], [False, True, False]])


def test_mixture_weights_are_a_softmax_over_components_per_position():
    rng = np.random.default_rng(5)
    row, col, nu = rng.normal(size=(4, 6)), rng.normal(size=(4, 6)), rng.normal(size=(3, 6))
    p = numpy(stem_ops.mixture_weights(row, col, nu))
    assert p.shape == (4, 4, 3)
    logits = np.einsum("abd,md->abm", row[:, None] + col[None, :], nu)
    want = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    np.testing.assert_allclose(p, want, atol=1e-6)


def test_value_depends_on_position_in_the_window():
    """A constant image still gives different outputs at different block positions: the
    position enters through the value mixture (the point of spatially-aware values)."""
    layer = _stem(filters=8, kernel_size=4, num_heads=2)
    y = numpy(layer(np.ones((1, 4, 4, 3), "float32")))[0]
    # Uniform attention over one block: every pixel of the block gets the same output...
    np.testing.assert_allclose(y, np.broadcast_to(y[0, 0], y.shape), atol=1e-6)
    # ...which is the mean over the 16 positions of the mixed values, not a single W_V x.
    wq, wk, wv, row, col, nu = _weights(layer)
    p = numpy(stem_ops.mixture_weights(row, col, nu))
    mixed = np.einsum("abm,mcf->abcf", p, wv)
    np.testing.assert_allclose(y[0, 0], np.ones(3) @ mixed.mean((0, 1)), atol=1e-5)
    assert np.abs(np.ones(3) @ (mixed[0, 0] - mixed[3, 3])).max() > 1e-3


def test_strides_average_pool_the_stride_one_output():
    x = np.random.default_rng(6).normal(size=(2, 7, 8, 3)).astype("float32")
    layer = _stem(filters=8, num_heads=2, window="sliding")
    strided = _stem(filters=8, num_heads=2, window="sliding", strides=2)
    full = layer(x)
    strided.build(x.shape)
    strided.set_weights(layer.get_weights())
    want = keras.ops.average_pool(full, 2, 2, padding="same")
    got = strided(x)
    assert tuple(got.shape) == (2, 4, 4, 8)
    np.testing.assert_allclose(numpy(got), numpy(want), atol=1e-6)


@pytest.mark.parametrize("window", ["block", "sliding"])
def test_unknown_batch_height_and_width(window):
    inputs = keras.Input((None, None, 3))
    layer = _stem(filters=8, num_heads=2, window=window, strides=2)
    model = keras.Model(inputs, layer(inputs))
    assert model.output_shape == (None, None, None, 8)
    for shape in [(1, 9, 5, 3), (3, 16, 12, 3)]:
        y = model.predict(np.zeros(shape, "float32"), verbose=0)
        assert y.shape == (shape[0], -(-shape[1] // 2), -(-shape[2] // 2), 8)
    assert layer.compute_output_shape((None, 224, 223, 3)) == (None, 112, 112, 8)


def test_paper_stem_shapes_224_to_56():
    stem = keras.Sequential(
        [
            keras.Input((224, 224, 3)),
            keras_sasa.AttentionStem2D(64),
            keras.layers.BatchNormalization(),
            keras.layers.MaxPooling2D(4),
        ]
    )
    assert stem.output_shape == (None, 56, 56, 64)
    # W_Q, W_K (3x64 each), 4 value matrices (4x3x64), 4x64 row and column tables, 4x64 nu.
    assert stem.layers[0].count_params() == 2 * 192 + 4 * 192 + 2 * 256 + 256


@pytest.mark.parametrize(
    "kwargs, error, fragment",
    [
        ({"filters": 0}, ValueError, "filters=0"),
        ({"filters": 8.0}, TypeError, "filters=8.0"),
        ({"filters": 8, "kernel_size": 0}, ValueError, "kernel_size=0"),
        ({"filters": 8, "kernel_size": "4"}, TypeError, "kernel_size='4'"),
        ({"filters": 8, "num_heads": 3}, ValueError, "num_heads=3"),
        ({"filters": 8, "num_heads": -2}, ValueError, "num_heads=-2"),
        ({"filters": 8, "num_mixtures": 0}, ValueError, "num_mixtures=0"),
        ({"filters": 8, "num_mixtures": None}, TypeError, "num_mixtures=None"),
        ({"filters": 8, "strides": 0}, ValueError, "strides=0"),
        ({"filters": 8, "strides": True}, TypeError, "strides=True"),
        ({"filters": 8, "window": "global"}, ValueError, "window='global'"),
        ({"filters": 8, "scale_logits": 1}, TypeError, "scale_logits=1"),
    ],
)
def test_invalid_arguments_name_the_argument(kwargs, error, fragment):
    layer_contract.assert_rejects(keras_sasa.AttentionStem2D, kwargs, error, fragment)


def test_build_rejects_wrong_rank_and_unknown_channels():
    with pytest.raises(ValueError, match=r"rank 4.*\(None, 8, 3\)"):
        keras_sasa.AttentionStem2D(8).build((None, 8, 3))
    with pytest.raises(ValueError, match=r"channel.*\(None, 8, 8, None\)"):
        keras_sasa.AttentionStem2D(8).build((None, 8, 8, None))


def test_get_config_has_every_argument_and_round_trips():
    layer = keras_sasa.AttentionStem2D(
        16,
        kernel_size=3,
        num_heads=2,
        num_mixtures=5,
        strides=2,
        window="sliding",
        scale_logits=False,
        kernel_initializer="he_normal",
        embedding_initializer=keras.initializers.RandomNormal(stddev=0.5),
        kernel_regularizer=keras.regularizers.L2(1e-4),
        embedding_regularizer="l1",
        kernel_constraint=keras.constraints.MaxNorm(2.0),
        embedding_constraint="non_neg",
        name="stem",
    )
    config = layer_contract.assert_config_round_trips(layer)
    assert config["embedding_initializer"]["config"]["stddev"] == 0.5


def test_keras_file_round_trip_in_safe_mode(tmp_path):
    layer = _stem(filters=8, num_heads=2, window="sliding", strides=2, name="stem")
    x = np.random.default_rng(7).normal(size=(2, 9, 10, 3)).astype("float32")
    layer_contract.assert_keras_file_round_trips(layer, x, tmp_path / "stem.keras")


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
@pytest.mark.parametrize("window", ["block", "sliding"])
def test_mixed_precision(policy, window):
    x = np.random.default_rng(8).normal(size=(2, 8, 8, 3)).astype("float32")
    layer_contract.assert_mixed_precision(
        lambda: _stem(filters=8, num_heads=2, window=window), x, policy, atol=0.05, relative=True
    )


def test_float16_logits_do_not_overflow():
    """q.k here is 180000 (after the 1/sqrt(4) scale), beyond float16's 65504; the logits
    and softmax run in float32, so the output stays finite."""
    keras.mixed_precision.set_global_policy("mixed_float16")
    layer = keras_sasa.AttentionStem2D(8, num_heads=2, kernel_initializer="ones")
    y = numpy(layer(np.full((1, 4, 4, 3), 100.0, "float32")))
    assert np.isfinite(y).all()
    np.testing.assert_allclose(y.astype("float32"), 300.0, rtol=1e-3)


@pytest.mark.parametrize("window", ["block", "sliding"])
def test_jit_compiled_model_matches_eager_and_trains(window):
    x = np.random.default_rng(9).normal(size=(8, 8, 8, 3)).astype("float32")
    y = np.random.default_rng(10).normal(size=(8, 8)).astype("float32")
    layer_contract.assert_compiles_and_trains(
        _stem(filters=8, num_heads=2, window=window),
        x,
        y,
        units=8,
        loss="mse",
        optimizer=keras.optimizers.SGD(0.1),
        epochs=3,
        max_ratio=1.0,
    )
