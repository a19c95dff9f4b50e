"""LocalSelfAttention2D: the paper's equation, borders, receptive field, Keras contract."""

import math

import keras
import numpy as np
import pytest
from keras import ops

import keras_sasa
import layer_contract
from backend import dtype
from backend import gradients
from backend import numpy
from backend import run
from keras_sasa import LocalSelfAttention2D
from numpy_reference import local_attention_loops


def average_pool_same(x, s):
    """s x s average pooling with "same" padding; padded positions are not counted."""
    batch, height, width, channels = x.shape
    out = np.zeros((batch, -(-height // s), -(-width // s), channels))
    for i in range(out.shape[1]):
        for j in range(out.shape[2]):
            out[:, i, j] = x[:, i * s : i * s + s, j * s : j * s + s].mean(axis=(1, 2))
    return out


def layer_by_loops(layer, x):
    """The layer's output computed from its weights with the NumPy pixel loop."""
    weights = {w.path.split("/")[-1]: w.numpy() for w in layer.weights}
    n, f = layer.num_heads, layer.filters
    proj = [x @ weights[f"{name}_kernel"] for name in ("query", "key", "value")]
    if layer.use_bias:
        proj = [p + b for p, b in zip(proj, np.split(weights["qkv_bias"], 3), strict=True)]
    q, k, v = (p.reshape(*x.shape[:3], n, f // n) for p in proj)
    out = local_attention_loops(
        q,
        k,
        v,
        weights["row_embeddings"],
        weights["column_embeddings"],
        layer.kernel_size,
        layer.dilation_rate,
        layer.border,
        scale=None if layer.scale_logits else 1.0,
    )
    return average_pool_same(out.reshape(*x.shape[:3], f), layer.strides)


def random_images(shape, seed=0):
    return np.random.default_rng(seed).normal(size=shape).astype("float32")


# (input shape, filters, kernel_size, num_heads, strides, dilation_rate, border, extra)
LAYER_CASES = [
    ((2, 7, 9, 5), 8, 3, 2, 1, 1, "mask", {}),
    ((1, 9, 8, 4), 12, 5, 3, 2, 1, "zeros", {}),
    ((1, 10, 7, 3), 8, 7, 4, 1, 1, "mask", {"use_bias": True, "bias_initializer": "ones"}),
    ((1, 11, 6, 4), 6, 3, 1, 3, 2, "mask", {}),
    ((2, 5, 5, 3), 16, 5, 8, 1, 1, "zeros", {"scale_logits": False}),
    ((1, 3, 2, 4), 4, 7, 2, 2, 1, "mask", {}),  # image smaller than the window
    ((1, 8, 8, 2), 10, 9, 5, 1, 1, "mask", {"implementation": "reference"}),
    ((1, 6, 9, 3), 6, 5, 2, 2, 2, "zeros", {"implementation": "reference"}),
]


@pytest.mark.parametrize("case", LAYER_CASES, ids=str)
def test_layer_matches_paper_equation(case):
    shape, filters, k, heads, strides, dilation, border, extra = case
    layer = LocalSelfAttention2D(
        filters, k, heads, strides=strides, dilation_rate=dilation, border=border, **extra
    )
    x = random_images(shape)
    layer.build(shape)
    got = run(layer, x)
    assert got.shape == layer.compute_output_shape(shape)
    np.testing.assert_allclose(got, layer_by_loops(layer, x), atol=1e-5)


def test_training_runs_the_additive_mask_and_inference_the_select():
    layer = LocalSelfAttention2D(8, 5, 2, dilation_rate=2)
    x = random_images((2, 9, 7, 3))
    layer.build(x.shape)
    query, key, value = (
        ops.reshape(ops.matmul(x, kernel), (2, 9, 7, 2, 4))
        for kernel in (layer.query_kernel, layer.key_kernel, layer.value_kernel)
    )
    args = (query, key, value, layer.row_embeddings, layer.column_embeddings, 5)

    def blocked(select_mask):
        out = keras_sasa.ops.local_attention_blocked(
            *args, dilation_rate=2, select_mask=select_mask
        )
        return numpy(ops.reshape(out, (2, 9, 7, 8)))

    # Bit for bit: what training computes is unchanged by the inference path.
    np.testing.assert_array_equal(numpy(layer(x, training=True)), blocked(False))
    np.testing.assert_array_equal(numpy(layer(x, training=False)), blocked(True))
    np.testing.assert_allclose(blocked(True), blocked(False), atol=1e-6)


def test_blocked_and_reference_implementations_agree():
    x = random_images((2, 13, 10, 6))
    fast = LocalSelfAttention2D(16, 7, 4, implementation="blocked", dilation_rate=2)
    reference = LocalSelfAttention2D(16, 7, 4, implementation="reference", dilation_rate=2)
    fast.build(x.shape)
    reference.build(x.shape)
    reference.set_weights(fast.get_weights())
    np.testing.assert_allclose(run(fast, x), run(reference, x), atol=1e-5)


@pytest.mark.parametrize("dilation", [1, 2])
@pytest.mark.parametrize("training", [False, True])
def test_receptive_field_is_exactly_the_window(dilation, training):
    # Both masks: training's additive one and inference's select.
    layer = LocalSelfAttention2D(4, kernel_size=3, num_heads=2, dilation_rate=dilation)
    x = random_images((1, 9, 9, 3))
    layer.build(x.shape)
    for i, j in [(4, 4), (0, 0), (8, 3)]:
        (grad,) = gradients(lambda x, i=i, j=j: ops.sum(layer(x, training=training)[0, i, j]), [x])
        touched = np.abs(grad[0]).sum(-1) > 0
        rows = {i + dilation * o for o in (-1, 0, 1)} & set(range(9))
        cols = {j + dilation * o for o in (-1, 0, 1)} & set(range(9))
        window = np.zeros((9, 9), bool)
        window[np.ix_(sorted(rows), sorted(cols))] = True
        np.testing.assert_array_equal(touched, window)


def test_masked_border_keeps_a_constant_image_constant():
    # Every key and value of a constant image is the same, so the output is v everywhere,
    # corners included, whatever the weights. Zero padding drags the border toward 0.
    x = np.ones((1, 6, 6, 3), "float32")
    masked = LocalSelfAttention2D(4, 5, 2, border="mask")
    masked.build(x.shape)
    out = run(masked, x)[0]
    np.testing.assert_allclose(out, np.broadcast_to(out[3, 3], out.shape), atol=1e-6)
    zeros = LocalSelfAttention2D(4, 5, 2, border="zeros")
    zeros.build(x.shape)
    zeros.set_weights(masked.get_weights())
    out = run(zeros, x)[0]
    assert np.abs(out[0, 0] - out[3, 3]).max() > 1e-2


def test_relative_embeddings_enter_the_logits_not_the_values():
    # With a single position in the window the softmax is 1 whatever the logits, so the
    # relative tables cannot change the output.
    layer = LocalSelfAttention2D(4, kernel_size=3, num_heads=2)
    x = random_images((1, 1, 1, 3))
    layer.build(x.shape)
    before = run(layer, x)
    for table in (layer.row_embeddings, layer.column_embeddings):
        table.assign(100.0 * np.ones(table.shape))
    np.testing.assert_allclose(run(layer, x), before, atol=1e-6)


def test_relative_table_shapes_split_each_head():
    layer = LocalSelfAttention2D(15, kernel_size=5, num_heads=3)
    layer.build((None, 8, 8, 4))
    assert tuple(layer.row_embeddings.shape) == (5, 3, 3)  # odd head size 5: rows get 3
    assert tuple(layer.column_embeddings.shape) == (5, 3, 2)
    # Parameters do not depend on the window except through the k x d_out tables.
    small = LocalSelfAttention2D(16, kernel_size=3, num_heads=4)
    large = LocalSelfAttention2D(16, kernel_size=9, num_heads=4)
    for lyr in (small, large):
        lyr.build((None, 8, 8, 4))
    assert large.count_params() - small.count_params() == (9 - 3) * 16


def test_no_relative_position_has_no_tables():
    layer = LocalSelfAttention2D(8, 3, 2, use_relative_position=False)
    layer.build((None, 5, 5, 3))
    assert [w.path.split("/")[-1] for w in layer.weights] == [
        "query_kernel",
        "key_kernel",
        "value_kernel",
    ]
    assert layer(random_images((1, 5, 5, 3))).shape == (1, 5, 5, 8)


def test_unknown_spatial_sizes_in_functional_model():
    layer = LocalSelfAttention2D(8, 5, 2, strides=2)
    model = keras.Sequential([keras.Input((None, None, 3)), layer])
    for height, width in [(7, 9), (2, 3), (16, 5)]:
        x = random_images((2, height, width, 3))
        out = model.predict(x, verbose=0)
        assert out.shape == (2, -(-height // 2), -(-width // 2), 8)
        np.testing.assert_allclose(out, layer_by_loops(layer, x), atol=1e-5)


def test_xla_compiled_model_matches_eager_and_trains():
    keras.utils.set_random_seed(0)
    x = random_images((32, 8, 8, 1))
    y = (x.mean(axis=(1, 2, 3)) > 0).astype("int32") + (x[:, 0, 0, 0] > 1)
    layer_contract.assert_compiles_and_trains(
        LocalSelfAttention2D(8, kernel_size=3, num_heads=2, strides=2),
        x,
        y,
        units=3,
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        optimizer=keras.optimizers.Adam(0.01),
        epochs=15,
        max_ratio=0.8,
    )


def test_saves_and_loads_in_safe_mode(tmp_path):
    layer = LocalSelfAttention2D(
        8,
        kernel_size=5,
        num_heads=2,
        strides=2,
        dilation_rate=2,
        border="zeros",
        use_bias=True,
        scale_logits=False,
        kernel_regularizer=keras.regularizers.L2(1e-4),
        embedding_initializer=keras.initializers.RandomNormal(stddev=0.3),
        name="sasa",
    )
    x = random_images((2, 9, 7, 3))
    layer_contract.assert_keras_file_round_trips(layer, x, tmp_path / "model.keras")


def test_config_holds_every_argument():
    layer = LocalSelfAttention2D(8, 3, 4, embedding_constraint=keras.constraints.NonNeg())
    layer_contract.assert_config_round_trips(layer)


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision(policy):
    x = random_images((1, 9, 9, 4))
    tolerance = 0.05 if policy == "mixed_float16" else 0.3
    layer = layer_contract.assert_mixed_precision(
        lambda: LocalSelfAttention2D(8, 5, 2), x, policy, atol=tolerance
    )
    # Logits of this size overflow float16 (max 65504); softmax in float32 stays finite.
    huge = layer(x * 300.0)
    assert np.isfinite(numpy(huge).astype("float32")).all()


@pytest.mark.parametrize(
    "kwargs, error, fragment",
    [
        ({"filters": 0}, ValueError, "filters=0"),
        ({"filters": -4}, ValueError, "filters=-4"),
        ({"filters": 8.0}, TypeError, "filters=8.0"),
        ({"kernel_size": 4}, ValueError, "kernel_size=4"),
        ({"kernel_size": 0}, ValueError, "kernel_size=0"),
        ({"kernel_size": -3}, ValueError, "kernel_size=-3"),
        ({"num_heads": 0}, ValueError, "num_heads=0"),
        ({"num_heads": 3}, ValueError, "num_heads=3"),
        ({"strides": 0}, ValueError, "strides=0"),
        ({"dilation_rate": 0}, ValueError, "dilation_rate=0"),
        ({"border": "same"}, ValueError, "border='same'"),
        ({"implementation": "cuda"}, ValueError, "implementation='cuda'"),
        ({"use_bias": "yes"}, TypeError, "use_bias='yes'"),
    ],
)
def test_bad_arguments_fail_at_construction(kwargs, error, fragment):
    arguments = {"filters": 8, "kernel_size": 3, "num_heads": 2, **kwargs}
    layer_contract.assert_rejects(LocalSelfAttention2D, arguments, error, fragment)


def test_bad_input_rank_names_the_shape():
    layer = LocalSelfAttention2D(8, 3, 2)
    with pytest.raises(ValueError, match=r"\(None, 8, 3\)"):
        layer.build((None, 8, 3))


def test_unknown_channels_names_the_shape():
    layer = LocalSelfAttention2D(8, 3, 2)
    with pytest.raises(ValueError, match=r"\(None, 8, 8, None\)"):
        layer.build((None, 8, 8, None))


def test_exported_at_top_level():
    assert keras_sasa.LocalSelfAttention2D is LocalSelfAttention2D
    assert math.isclose(LocalSelfAttention2D(8, 3, 2).head_size, 4)


@pytest.mark.parametrize("case", LAYER_CASES[:6], ids=str)
def test_unrolled_layer_matches_paper_equation(case):
    shape, filters, k, heads, strides, dilation, border, extra = case
    layer = LocalSelfAttention2D(
        filters,
        k,
        heads,
        strides=strides,
        dilation_rate=dilation,
        border=border,
        implementation="unrolled",
        **extra,
    )
    x = random_images(shape)
    np.testing.assert_allclose(numpy(layer(x)), layer_by_loops(layer, x), atol=1e-5)


def test_attention_scores_are_full_resolution_beside_the_pooled_outputs():
    layer = LocalSelfAttention2D(8, 3, 2, strides=2)
    x = random_images((2, 7, 6, 3))
    out, scores = layer(x, return_attention_scores=True)
    assert tuple(scores.shape) == (2, 7, 6, 2, 3, 3)
    assert dtype(scores) == "float32"
    assert tuple(out.shape) == (2, 4, 3, 8)
    np.testing.assert_allclose(numpy(out), numpy(layer(x)), atol=1e-6)


def test_attention_scores_sum_to_one_and_are_zero_outside_the_image():
    layer = LocalSelfAttention2D(4, 5, 2, dilation_rate=2, border="mask")
    _, scores = layer(random_images((1, 6, 6, 3)), return_attention_scores=True)
    scores = numpy(scores)[0]
    np.testing.assert_allclose(scores.sum(axis=(-1, -2)), 1.0, atol=1e-6)
    # Pixel (1, 4): row offsets -2 and -1 (times dilation 2) reach rows -3 and -1, column
    # offsets +1 and +2 reach columns 6 and 8, all outside; the other 3 x 3 are inside.
    pixel = scores[1, 4]
    inside = np.zeros((5, 5), bool)
    inside[2:, :3] = True
    np.testing.assert_array_equal(pixel[:, ~inside], 0.0)
    assert (pixel[:, inside] > 0).all()


def test_attention_scores_equal_the_reference_implementations():
    x = random_images((1, 8, 7, 4))
    layers = {}
    for implementation in ("auto", "reference"):
        layers[implementation] = LocalSelfAttention2D(
            8, 5, 2, border="zeros", implementation=implementation
        )
        layers[implementation].build(x.shape)
    layers["reference"].set_weights(layers["auto"].get_weights())
    out, scores = layers["auto"](x, return_attention_scores=True)
    ref_out, ref_scores = layers["reference"](x, return_attention_scores=True)
    np.testing.assert_allclose(numpy(scores), numpy(ref_scores), atol=1e-5)
    np.testing.assert_allclose(numpy(out), numpy(ref_out), atol=1e-5)


def test_functional_model_returns_outputs_and_attention_scores():
    inputs = keras.Input((None, None, 3))
    layer = LocalSelfAttention2D(8, 3, 2, strides=2)
    outputs, scores = layer(inputs, return_attention_scores=True)
    assert tuple(outputs.shape) == (None, None, None, 8)
    assert tuple(scores.shape) == (None, None, None, 2, 3, 3)
    model = keras.Model(inputs, [outputs, scores])
    x = random_images((2, 5, 6, 3))
    got_outputs, got_scores = model.predict(x, verbose=0)
    assert got_scores.shape == (2, 5, 6, 2, 3, 3)
    np.testing.assert_allclose(got_outputs, numpy(layer(x)), atol=1e-6)


def test_attention_scores_stay_float32_under_mixed_precision():
    keras.mixed_precision.set_global_policy("mixed_float16")
    layer = LocalSelfAttention2D(8, 3, 2)
    out, scores = layer(random_images((1, 5, 5, 3)), return_attention_scores=True)
    assert dtype(out) == "float16"
    assert dtype(scores) == "float32"
    np.testing.assert_allclose(numpy(scores).sum(axis=(-1, -2)), 1.0, atol=1e-6)
