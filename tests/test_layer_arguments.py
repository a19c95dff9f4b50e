"""The attention layers take `kernel_size`, `strides` and `dilation_rate` as Conv2D does (an
int or a pair), and refuse inputs and windows they cannot compute, naming what they got."""

import numpy as np
import pytest

from keras_sasa import AttentionStem2D
from keras_sasa import LocalSelfAttention2D
from keras_sasa import models
from keras_sasa.layers.local_attention import MAX_KERNEL_SIZE
from keras_sasa.ops.window_attention import local_attention_reference


def images(shape, seed=0):
    return np.random.default_rng(seed).normal(size=shape).astype("float32")


@pytest.mark.parametrize(
    "arguments",
    [
        {"kernel_size": (5, 5), "strides": (2, 2), "dilation_rate": [1, 1]},
        {"kernel_size": [3, 3], "strides": 1, "dilation_rate": (2, 2)},
    ],
)
def test_pairs_of_equal_values_mean_their_int(arguments):
    layer = LocalSelfAttention2D(8, num_heads=2, **arguments)
    as_ints = {
        name: value if isinstance(value, int) else value[0] for name, value in arguments.items()
    }
    assert {name: getattr(layer, name) for name in arguments} == as_ints
    config = layer.get_config()
    assert {name: config[name] for name in arguments} == as_ints
    # The same layer as with ints: same weights give the same outputs.
    twin = LocalSelfAttention2D(8, num_heads=2, **as_ints)
    x = images((2, 9, 9, 4))
    layer.build(x.shape)
    twin.build(x.shape)
    twin.set_weights(layer.get_weights())
    np.testing.assert_array_equal(np.asarray(layer(x)), np.asarray(twin(x)))


def test_configs_load_with_ints_and_with_pairs():
    old = LocalSelfAttention2D(8, kernel_size=3, num_heads=2, strides=2).get_config()
    assert LocalSelfAttention2D.from_config(old).get_config() == old
    pairs = {**old, "kernel_size": [3, 3], "strides": [2, 2], "dilation_rate": [1, 1]}
    assert LocalSelfAttention2D.from_config(pairs).get_config() == old


@pytest.mark.parametrize(
    "name, value, kind",
    [
        ("strides", (1, 2), ValueError),
        ("dilation_rate", (2, 1), ValueError),
        ("kernel_size", (3, 5), ValueError),
        ("kernel_size", (3,), TypeError),
        ("strides", (1, 1, 1), TypeError),
        ("strides", (1.0, 1.0), TypeError),
        ("kernel_size", (4, 4), ValueError),
    ],
)
def test_other_pairs_are_refused_naming_the_argument(name, value, kind):
    with pytest.raises(kind, match=rf"argument `{name}`.*Received: {name}="):
        LocalSelfAttention2D(8, num_heads=2, **{name: value})


def test_the_stem_takes_pairs_too():
    stem = AttentionStem2D(8, kernel_size=(4, 4), strides=[2, 2])
    assert (stem.kernel_size, stem.strides) == (4, 2)
    assert stem.get_config()["kernel_size"] == 4
    with pytest.raises(ValueError, match=r"`strides`.*Received: strides=\(1, 2\)"):
        AttentionStem2D(8, strides=(1, 2))


@pytest.mark.parametrize("layer_class", [LocalSelfAttention2D, AttentionStem2D])
@pytest.mark.parametrize("shape", [(2, 8, 8, 0), (2, 0, 8, 3), (2, 8, 0, 3)])
def test_inputs_without_rows_columns_or_channels_are_refused_naming_the_shape(layer_class, shape):
    layer = layer_class(8, num_heads=2)
    with pytest.raises(
        ValueError,
        match=rf"at least one row.*input_shape={shape}".replace("(", r"\(").replace(")", r"\)"),
    ):
        layer.build(shape)


def test_a_resnet_without_input_channels_is_refused_naming_the_shape():
    with pytest.raises(ValueError, match=r"`input_shape`.*Received: input_shape=\(32, 32, 0\)"):
        models.SASAResNet26(input_shape=(32, 32, 0))


def test_a_window_over_the_maximum_is_refused():
    LocalSelfAttention2D(8, kernel_size=MAX_KERNEL_SIZE, num_heads=2)
    with pytest.raises(ValueError, match=r"at most 1023.*Received: kernel_size=10001"):
        LocalSelfAttention2D(8, kernel_size=10001, num_heads=2)


@pytest.mark.parametrize("implementation", ["blocked", "unrolled"])
def test_a_window_wider_than_a_known_map_is_cut_with_the_same_outputs(implementation):
    """On a 5 x 6 map at most 2 * 6 - 1 = 11 positions of a row or column can be inside:
    a window of 1023 computes what one of 11 does, with the 11 central table rows, and
    its scores are 0 outside."""
    x = images((2, 5, 6, 4))
    wide = LocalSelfAttention2D(8, kernel_size=1023, num_heads=2, implementation=implementation)
    wide.build(x.shape)
    assert wide.row_embeddings.shape == (1023, 2, 2)  # The weights keep their shape.
    cut = LocalSelfAttention2D(8, kernel_size=11, num_heads=2, implementation=implementation)
    cut.build(x.shape)
    centre = slice(1023 // 2 - 5, 1023 // 2 + 6)
    query, key, value, rows, columns = wide.get_weights()
    cut.set_weights([query, key, value, rows[centre], columns[centre]])
    np.testing.assert_allclose(np.asarray(wide(x)), np.asarray(cut(x)), atol=1e-6)


def test_the_scores_of_a_cut_window_keep_the_layers_window():
    x = images((1, 3, 3, 4))
    layer = LocalSelfAttention2D(4, kernel_size=9, num_heads=2)
    outputs, scores = layer(x, return_attention_scores=True)
    assert scores.shape == (1, 3, 3, 2, 9, 9)
    scores = np.asarray(scores)
    # 3 x 3 map: offsets beyond +-2 are outside; the centre pixel's reach is +-1.
    assert np.all(scores[..., :2, :] == 0) and np.all(scores[..., 7:, :] == 0)
    np.testing.assert_allclose(scores.sum(axis=(-2, -1)), 1.0, atol=1e-5)
    np.testing.assert_allclose(np.asarray(outputs), np.asarray(layer(x)), atol=1e-6)


def test_the_cut_window_computes_what_the_full_window_computes():
    """The reference op with the full 9 x 9 window and tables on a 3 x 3 map, against the
    layer, which cuts the window to 5 x 5."""
    x = images((2, 3, 3, 4))
    layer = LocalSelfAttention2D(4, kernel_size=9, num_heads=2)
    outputs = np.asarray(layer(x))
    query, key, value = (
        x @ np.asarray(w) for w in (layer.query_kernel, layer.key_kernel, layer.value_kernel)
    )
    heads = [t.reshape(2, 3, 3, 2, 2) for t in (query, key, value)]
    full = local_attention_reference(
        *heads, layer.row_embeddings.value, layer.column_embeddings.value, kernel_size=9
    )
    np.testing.assert_allclose(outputs, np.asarray(full).reshape(2, 3, 3, 4), atol=1e-5)
