"""Pictures of where a `LocalSelfAttention2D` layer looks (matplotlib, Agg backend).

- `attention_scores`: the layer's softmax weights for one image, every pixel over its
  k x k window (`LocalSelfAttention2D(..., return_attention_scores=True)`).
- `attention_for_pixel`: one query pixel's weights laid out on the layer's feature map,
  one map per head.
- `plot_pixel_attention`: those maps drawn over the image, one panel per head and their mean.
- `plot_attention_grid`: the mean map of a grid of query pixels over the image.

Pixels are given in image coordinates. A layer deeper in the model works on a smaller
feature map: the query is the feature pixel covering the image pixel, and each feature
pixel's weight is drawn over the image pixels it covers.

The model may be functional, Sequential or subclassed, built in memory or loaded from a
`.keras` file, and the layer may be nested in a sub-model or a subclassed layer: the
layer's input is recorded while the model runs on the image.
"""

import os

import keras
import matplotlib
import numpy as np

from keras_sasa import _validation as check
from keras_sasa.layers import LocalSelfAttention2D

matplotlib.use("Agg")

from matplotlib.figure import Figure  # noqa: E402  (after the backend is chosen)


def _sublayers(layer):
    """The layers directly inside `layer`: a model's `layers`, or the layers a subclassed
    layer holds in its attributes (alone or in lists), in the order they were set."""
    if isinstance(layer, keras.Model):
        return list(layer.layers)
    found = []
    for value in vars(layer).values():
        items = value if isinstance(value, (list, tuple)) else [value]
        found += [item for item in items if isinstance(item, keras.layers.Layer)]
    return found


def _attention_layers(model):
    """The `LocalSelfAttention2D` layers of `model` and of the models and layers nested in
    it, depth first, each once."""
    found, seen, stack = [], set(), list(reversed(_sublayers(model)))
    while stack:
        layer = stack.pop()
        if id(layer) in seen:
            continue
        seen.add(id(layer))
        if isinstance(layer, LocalSelfAttention2D):
            found.append(layer)
        else:
            stack.extend(reversed(_sublayers(layer)))
    return found


def attention_layer_names(model):
    """Names of the model's `LocalSelfAttention2D` layers (nested ones too), in order."""
    names = [layer.name for layer in _attention_layers(model)]
    if not names:
        raise ValueError(f"Model {model.name!r} has no LocalSelfAttention2D layer.")
    return names


def load_image(path, model=None):
    """An image file as a float32 `(height, width, channels)` array for `model`.

    `.png`, `.jpg` (anything `keras.utils.load_img` reads) are scaled from 0..255 to
    0..1; `.npy` arrays of integers are scaled the same way, floats are kept as they are
    (NaN and infinities are refused).
    With a `model` whose input has a fixed size, the image is resized to it and given the
    model's number of channels (1: grayscale, 3: RGB).
    """
    path = str(path)
    size, channels = None, None
    if model is not None:
        _, height, width, channels = model.inputs[0].shape
        size = None if height is None or width is None else (height, width)
    if path.lower().endswith(".npy"):
        try:
            image = np.load(path)
        except (ValueError, EOFError, OSError) as error:
            if isinstance(error, FileNotFoundError):
                raise
            raise ValueError(f"Cannot read {path} as a NumPy .npy array: {error}") from None
        if image.ndim == 2:
            image = image[:, :, None]
        if image.ndim != 3:
            raise ValueError(
                f"Expected an image of shape (height, width[, channels]) in {path}. "
                f"Received shape {image.shape}"
            )
        if image.dtype.kind not in "biuf":  # Booleans, integers, floats.
            raise ValueError(
                f"Expected an array of real numbers in {path}. Received dtype {image.dtype}"
            )
        if not np.all(np.isfinite(image)):
            count = int(np.size(image) - np.count_nonzero(np.isfinite(image)))
            raise ValueError(
                f"{path} holds NaN or infinite values ({count} of {image.size}); an image "
                "needs finite values."
            )
        if np.issubdtype(image.dtype, np.integer):
            image = image / 255.0
        image = np.asarray(image, "float32")
        if channels == 1 and image.shape[-1] == 3:
            image = image.mean(axis=-1, keepdims=True)
        if size is not None and image.shape[:2] != size:
            image = np.asarray(keras.ops.image.resize(image, size), "float32")
    else:
        mode = "grayscale" if channels == 1 else "rgb"
        try:
            image = keras.utils.load_img(path, color_mode=mode, target_size=size)
        except (OSError, ValueError) as error:
            if isinstance(error, FileNotFoundError):
                raise
            # Pillow's own message names a BytesIO, not the file.
            raise ValueError(
                f"Cannot read {path} as an image: not a file Pillow can decode (.png, .jpg, "
                f"...; {type(error).__name__})."
            ) from None
        image = keras.utils.img_to_array(image, dtype="float32") / 255.0
    if channels is not None and image.shape[-1] != channels:
        raise ValueError(
            f"Image {path} has {image.shape[-1]} channels; model {model.name!r} expects {channels}."
        )
    return image


def _layer_and_inputs(model, image, layer_name):
    """The attention layer and its input for `image` (a sub-model runs the layers before)."""
    image = np.asarray(image, "float32")
    if image.ndim != 3:
        raise ValueError(
            f"Expected argument `image` of shape (height, width, channels). "
            f"Received shape {image.shape}"
        )
    if isinstance(model, LocalSelfAttention2D):
        return model, image[None]
    if not isinstance(model, keras.Model):
        raise TypeError(
            "Expected argument `model` to be a keras.Model or a LocalSelfAttention2D layer. "
            f"Received model of type {type(model).__name__}"
        )
    layer = _find_layer(model, layer_name or attention_layer_names(model)[0])
    if not isinstance(layer, LocalSelfAttention2D):
        raise TypeError(
            f"Layer {layer.name!r} is a {type(layer).__name__}, not a LocalSelfAttention2D."
        )
    return layer, _input_of(model, layer, image[None])


def _find_layer(model, name):
    """The layer called `name` in `model` or in a model or layer nested in it."""
    seen, stack = set(), list(reversed(_sublayers(model)))
    while stack:
        layer = stack.pop()
        if id(layer) in seen:
            continue
        seen.add(id(layer))
        if layer.name == name:
            return layer
        stack.extend(reversed(_sublayers(layer)))
    raise ValueError(f"No layer named {name!r} in model {model.name!r}.")


def _input_of(model, layer, images):
    """What `layer` receives when `model` runs on `images` (its first call's input).

    The model runs once, eagerly, with `layer.call` wrapped to record its input. A
    sub-model `keras.Model(model.input, layer.input)` would need `layer.input`, which a
    Sequential model (built or loaded) does not give, nor a layer nested in a subclassed
    layer; running the model works for every kind of model.
    """
    captured = []
    call = layer.call

    def recording_call(inputs, *args, **kwargs):
        captured.append(inputs)
        return call(inputs, *args, **kwargs)

    layer.call = recording_call
    try:
        model(images, training=False)
    finally:
        del layer.call  # The class's method again.
    if not captured:
        raise ValueError(f"Layer {layer.name!r} is not used when model {model.name!r} runs.")
    return captured[0]


def _scores(model, image, layer_name):
    layer, features = _layer_and_inputs(model, image, layer_name)
    _, scores = layer(features, return_attention_scores=True)
    return np.asarray(scores)[0], layer.dilation_rate


def attention_scores(model, image, layer_name=None):
    """The layer's attention weights for one image.

    Args:
        model: a Keras model, or a `LocalSelfAttention2D` layer (then `image` is its input).
        image: `(height, width, channels)` array.
        layer_name: name of a `LocalSelfAttention2D` layer of `model` (default: the first).

    Returns:
        `(height', width', num_heads, kernel_size, kernel_size)` float32 NumPy array at the
        layer's input resolution: `[i, j, h, a, b]` is head h's weight, for query pixel
        `(i, j)`, of the pixel at offset `((a - k//2) * dilation, (b - k//2) * dilation)`.
    """
    return _scores(model, image, layer_name)[0]


def _window_on_grid(scores, dilation, pixel, image_shape):
    """(num_heads, H', W') maps of the weights of the feature pixel covering `pixel`."""
    height, width, num_heads, k, _ = scores.shape
    row, col = (int(p) for p in pixel)
    if not (0 <= row < image_shape[0] and 0 <= col < image_shape[1]):
        raise check.error(
            "pixel",
            tuple(pixel),
            f"Expected a pixel of the {image_shape[0]}x{image_shape[1]} image",
        )
    i, j = row * height // image_shape[0], col * width // image_shape[1]
    maps = np.zeros((num_heads, height, width), "float32")
    for a in range(k):
        for b in range(k):
            r, c = i + (a - k // 2) * dilation, j + (b - k // 2) * dilation
            if 0 <= r < height and 0 <= c < width:
                maps[:, r, c] += scores[i, j, :, a, b]
    return maps


def _centre(image):
    height, width = np.shape(image)[:2]
    return height // 2, width // 2


def attention_for_pixel(model, image, layer_name=None, pixel=None):
    """One query pixel's attention weights laid out on the layer's feature map.

    Args:
        model: a Keras model, or a `LocalSelfAttention2D` layer (then `image` is its input).
        image: `(height, width, channels)` array.
        layer_name: name of a `LocalSelfAttention2D` layer of `model` (default: the first).
        pixel: `(row, column)` of the query in image coordinates (default: the centre).

    Returns:
        `(num_heads, height', width')` float32 NumPy array over the layer's input grid:
        each head's weights on the pixels of the query's window, 0 elsewhere. With
        `border="mask"` every head's map sums to 1.
    """
    scores, dilation = _scores(model, image, layer_name)
    pixel = _centre(image) if pixel is None else pixel
    return _window_on_grid(scores, dilation, pixel, np.shape(image)[:2])


def _show_image(ax, image):
    # In faded gray, so that the coloured weights stand out on any image.
    gray = np.asarray(image, "float32").mean(-1)
    low, high = float(gray.min()), float(gray.max())
    gray = (gray - low) / (high - low) if high > low else np.zeros_like(gray)
    ax.imshow(gray, cmap="gray", vmin=-1.0, vmax=1.5)
    ax.set_xticks([])
    ax.set_yticks([])


def _overlay(ax, weights, image_shape, vmax=None):
    height, width = image_shape
    ax.imshow(
        np.ma.masked_equal(weights, 0),
        cmap="viridis",
        alpha=0.85,
        extent=(-0.5, width - 0.5, height - 0.5, -0.5),
        interpolation="nearest",
        vmin=0,
        vmax=vmax,
    )


def plot_pixel_attention(model, image, layer_name=None, pixel=None):
    """Each head's attention for one query pixel, and their mean, drawn over the image.

    Arguments as for `attention_for_pixel`.

    Returns:
        A matplotlib `Figure` with `num_heads + 1` axes: one per head, then the mean.
    """
    image_shape = np.shape(image)[:2]
    pixel = _centre(image) if pixel is None else tuple(pixel)
    maps = attention_for_pixel(model, image, layer_name, pixel)
    panels = [(f"head {h}", m) for h, m in enumerate(maps)] + [("mean", maps.mean(0))]
    figure = Figure(figsize=(2.4 * len(panels), 2.8))
    axes = figure.subplots(1, len(panels), squeeze=False)[0]
    for ax, (title, weights) in zip(axes, panels, strict=True):
        _show_image(ax, image)
        _overlay(ax, weights, image_shape)
        ax.plot(pixel[1], pixel[0], marker="+", color="cyan", markersize=10)
        ax.set_title(title, fontsize=9)
    name = getattr(model, "name", "")
    figure.suptitle(f"{layer_name or name}: attention of pixel {tuple(pixel)}", fontsize=10)
    return figure


def plot_attention_grid(model, image, layer_name=None, grid=4):
    """Where one layer looks across the image: `grid` x `grid` query pixels, evenly spread.

    Every panel shows the image with one query pixel's attention, averaged over the heads.

    Args:
        model, image, layer_name: as for `attention_for_pixel`.
        grid: number of query pixels per row and per column, at most the side of the
            layer's input feature map.

    Returns:
        A matplotlib `Figure` with `grid * grid` axes, row-major over the query pixels.
    """
    check.positive_int("grid", grid, type_error=ValueError)
    image_shape = np.shape(image)[:2]
    scores, dilation = _scores(model, image, layer_name)
    # One query per feature pixel at most: a finer grid repeats panels (and 50 x 50
    # panels take minutes to draw).
    side = min(scores.shape[:2])
    if grid > side:
        raise check.error(
            "grid",
            grid,
            f"Expected at most {side}, the side of the {scores.shape[0]}x{scores.shape[1]} "
            "feature map the attention layer works on",
        )
    rows = [int((r + 0.5) * image_shape[0] / grid) for r in range(grid)]
    cols = [int((c + 0.5) * image_shape[1] / grid) for c in range(grid)]
    figure = Figure(figsize=(2.0 * grid, 2.0 * grid + 0.4))
    axes = figure.subplots(grid, grid, squeeze=False)
    for r, row in enumerate(rows):
        for c, col in enumerate(cols):
            weights = _window_on_grid(scores, dilation, (row, col), image_shape).mean(0)
            ax = axes[r, c]
            _show_image(ax, image)
            _overlay(ax, weights, image_shape)
            ax.plot(col, row, marker="+", color="cyan", markersize=8)
    figure.suptitle(f"{layer_name or getattr(model, 'name', '')}: mean attention", fontsize=10)
    return figure


def save_figure(figure, path):
    """Writes `figure` as a PNG (or the format of `path`'s extension) and returns the path
    written: `path`, or `path` + ".png" if it has no extension (as matplotlib does)."""
    path = os.fspath(path)
    if not os.path.splitext(path)[1]:
        path += "." + matplotlib.rcParams["savefig.format"]
    figure.savefig(path, dpi=100, bbox_inches="tight")
    return path
