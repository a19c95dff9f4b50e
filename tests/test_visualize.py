"""Attention maps: the weights drawn per pixel and per grid, and the attention-map command."""

import keras
import matplotlib.image
import numpy as np
import pytest

from keras_sasa import LocalSelfAttention2D
from keras_sasa import cli
from keras_sasa import visualize

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def small_model():
    inputs = keras.Input((12, 12, 3))
    x = keras.layers.Conv2D(8, 1, name="proj")(inputs)
    x = LocalSelfAttention2D(8, 3, 2, name="attn1")(x)
    x = keras.layers.AveragePooling2D(2, name="pool")(x)
    x = LocalSelfAttention2D(8, 5, 2, dilation_rate=2, name="attn2")(x)
    return keras.Model(inputs, x)


def image(seed=0):
    return np.random.default_rng(seed).uniform(size=(12, 12, 3)).astype("float32")


def test_attention_scores_of_an_inner_layer_come_from_its_input():
    model = small_model()
    scores = visualize.attention_scores(model, image(), "attn2")
    features = keras.Model(model.input, model.get_layer("pool").output)(image()[None])
    _, expected = model.get_layer("attn2")(features, return_attention_scores=True)
    assert scores.shape == (6, 6, 2, 5, 5)
    np.testing.assert_allclose(scores, np.asarray(expected)[0], atol=1e-6)


def test_pixel_map_places_the_window_weights_on_the_feature_grid():
    model = small_model()
    # Image pixel (11, 0) lies in feature pixel (5, 0) of attn2's 6 x 6 input; with dilation
    # 2 its window reaches rows 1, 3, 5 and columns 0, 2, 4 inside the map.
    maps = visualize.attention_for_pixel(model, image(), "attn2", pixel=(11, 0))
    assert maps.shape == (2, 6, 6)
    np.testing.assert_allclose(maps.sum(axis=(1, 2)), 1.0, atol=1e-6)
    window = np.zeros((6, 6), bool)
    window[np.ix_([1, 3, 5], [0, 2, 4])] = True
    assert (maps[:, window] > 0).all()
    np.testing.assert_array_equal(maps[:, ~window], 0.0)
    scores = visualize.attention_scores(model, image(), "attn2")
    np.testing.assert_allclose(maps[:, 3, 2], scores[5, 0, :, 1, 3], atol=1e-7)


def test_pixel_map_of_a_layer_called_directly():
    layer = LocalSelfAttention2D(4, 3, 2)
    features = image()[:5, :5]
    maps = visualize.attention_for_pixel(layer, features, pixel=(0, 0))
    assert maps.shape == (2, 5, 5)
    np.testing.assert_allclose(maps.sum(axis=(1, 2)), 1.0, atol=1e-6)
    np.testing.assert_array_equal(maps[:, 2:, :], 0.0)
    np.testing.assert_array_equal(maps[:, :, 2:], 0.0)


def test_pixel_outside_the_image_is_rejected():
    with pytest.raises(ValueError, match=r"pixel=\(12, 0\)"):
        visualize.attention_for_pixel(small_model(), image(), "attn1", pixel=(12, 0))


def test_layer_that_is_not_attention_is_rejected():
    with pytest.raises(TypeError, match="'proj' is a Conv2D"):
        visualize.attention_for_pixel(small_model(), image(), "proj")


def test_pixel_figure_has_one_panel_per_head_and_the_mean():
    figure = visualize.plot_pixel_attention(small_model(), image(), "attn1", pixel=(3, 4))
    assert len(figure.axes) == 3
    assert [ax.get_title() for ax in figure.axes] == ["head 0", "head 1", "mean"]


def test_grid_figure_has_one_panel_per_query_pixel():
    figure = visualize.plot_attention_grid(small_model(), image(), "attn2", grid=3)
    assert len(figure.axes) == 9


@pytest.fixture
def model_file(tmp_path):
    path = tmp_path / "model.keras"
    small_model().save(path)
    return path


@pytest.mark.parametrize("suffix", [".npy", ".png"])
def test_attention_map_command_writes_a_png(model_file, tmp_path, suffix):
    source = tmp_path / f"image{suffix}"
    pixels = (image() * 255).astype("uint8")
    if suffix == ".npy":
        np.save(source, pixels)
    else:  # A larger picture, resized to the model's 12 x 12 input.
        matplotlib.image.imsave(source, np.kron(pixels, np.ones((3, 3, 1), "uint8")))
    output = tmp_path / "map.png"
    argv = ["attention-map", str(model_file), str(source), "--layer", "attn2"]
    assert cli.main([*argv, "--pixel", "5", "7", "--output", str(output)]) == 0
    assert output.read_bytes()[:8] == PNG_SIGNATURE
    height, width, _ = matplotlib.image.imread(output).shape
    assert width > 2 * height > 100  # Three panels side by side.


def test_attention_map_command_draws_the_grid_view(model_file, tmp_path):
    source = tmp_path / "image.npy"
    np.save(source, image())
    output = tmp_path / "grid.png"
    argv = ["attention-map", str(model_file), str(source), "--grid", "2", "--output", str(output)]
    assert cli.main(argv) == 0
    assert output.read_bytes()[:8] == PNG_SIGNATURE
    height, width, _ = matplotlib.image.imread(output).shape
    assert height > 100 and width > 100


def test_attention_map_command_rejects_an_unknown_layer(model_file, tmp_path, capsys):
    source = tmp_path / "image.npy"
    np.save(source, image())
    argv = ["attention-map", str(model_file), str(source), "--layer", "nope", "--output", "x.png"]
    assert cli.main(argv) != 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "nope" in err


# Every kind of model: Sequential, functional, a layer nested in a subclassed layer, loaded.


def sequential_model():
    return keras.Sequential(
        [
            keras.Input((12, 12, 3)),
            keras.layers.Conv2D(8, 1, name="proj"),
            LocalSelfAttention2D(8, 3, 2, name="attn1"),
        ]
    )


class Block(keras.layers.Layer):
    """A subclassed layer holding a projection and an attention layer."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.proj = keras.layers.Conv2D(8, 1, name="inner_proj")
        self.attn = LocalSelfAttention2D(8, 3, 2, name="inner_attn")

    def call(self, inputs):
        return self.attn(self.proj(inputs))


def expected_pixel_map(projection, attention, pixel):
    """The map computed by hand: the projection, then the attention layer's scores."""
    _, scores = attention(projection(image()[None]), return_attention_scores=True)
    scores = np.asarray(scores)[0]
    row, col = pixel
    maps = np.zeros((2, 12, 12), "float32")
    for a in range(3):
        for b in range(3):
            r, c = row + a - 1, col + b - 1
            if 0 <= r < 12 and 0 <= c < 12:
                maps[:, r, c] = scores[row, col, :, a, b]
    return maps


def test_pixel_map_of_a_sequential_model_in_memory_and_loaded(tmp_path):
    model = sequential_model()
    expected = expected_pixel_map(model.get_layer("proj"), model.get_layer("attn1"), (4, 0))
    maps = visualize.attention_for_pixel(model, image(), "attn1", pixel=(4, 0))
    np.testing.assert_allclose(maps, expected, atol=1e-6)
    model.save(tmp_path / "sequential.keras")
    loaded = keras.models.load_model(tmp_path / "sequential.keras")
    maps = visualize.attention_for_pixel(loaded, image(), pixel=(4, 0))
    np.testing.assert_allclose(maps, expected, atol=1e-6)
    np.testing.assert_allclose(maps.sum(axis=(1, 2)), 1.0, atol=1e-6)


def test_pixel_map_of_an_attention_layer_inside_a_subclassed_layer():
    inputs = keras.Input((12, 12, 3))
    block = Block(name="block")
    model = keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(block(inputs)))
    assert visualize.attention_layer_names(model) == ["inner_attn"]
    maps = visualize.attention_for_pixel(model, image(), pixel=(0, 11))
    np.testing.assert_allclose(maps, expected_pixel_map(block.proj, block.attn, (0, 11)), atol=1e-6)
    assert "call" not in vars(block.attn)  # The recording wrapper is gone.


def test_pixel_map_of_a_loaded_functional_model_matches_the_in_memory_one(model_file):
    loaded = keras.models.load_model(model_file)
    maps = visualize.attention_for_pixel(loaded, image(), "attn2", pixel=(11, 0))
    features = keras.Model(loaded.inputs, loaded.get_layer("pool").output)(image()[None])
    _, scores = loaded.get_layer("attn2")(features, return_attention_scores=True)
    np.testing.assert_allclose(maps[:, 3, 2], np.asarray(scores)[0, 5, 0, :, 1, 3], atol=1e-7)


def test_attention_map_command_prints_the_file_it_wrote(model_file, tmp_path, capsys):
    source = tmp_path / "image.npy"
    np.save(source, image())
    output = tmp_path / "map"  # matplotlib adds the suffix of its default format.
    assert cli.main(["attention-map", str(model_file), str(source), "--output", str(output)]) == 0
    assert capsys.readouterr().out == f"Wrote {output}.png\n"
    assert (tmp_path / "map.png").read_bytes()[:8] == PNG_SIGNATURE
    assert not output.exists()
