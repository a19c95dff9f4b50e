"""Export for serving: TensorFlow SavedModel and TFLite with builtin ops only.

- `save_model`: `model.export` as a SavedModel whose `serve` endpoint gives Keras's numbers.
- `to_tflite`: a `.tflite` flatbuffer from `tf.lite.TFLiteConverter` restricted to
  `TFLITE_BUILTINS` (no select TF ops). The fast blocked attention and the extract_patches
  reference use ops TFLite lacks (ExtractImagePatches, BatchMatMul above rank 5, slices of
  6-D tensors), so the model is first cloned with `implementation="unrolled"` and the same
  weights (`with_implementation`), whose graph is pads, slices, products, sums and a 2-D
  softmax.
- `with_implementation`: that clone, useful on its own (e.g. to compare implementations).

`AttentionStem2D` converts as it is: both of its windows keep tensors within 6 dimensions
and products within rank 4.
"""

import os
import re

import keras

from keras_sasa.layers import LocalSelfAttention2D
from keras_sasa.ops.window_attention import IMPLEMENTATIONS

FORMATS = ("saved_model", "tflite")


def with_implementation(model, implementation="unrolled"):
    """A copy of `model` whose `LocalSelfAttention2D` layers use `implementation`.

    Every layer is rebuilt from its config (nested models included), with `implementation`
    swapped in the attention layers' configs, and the weights are copied: the copy computes
    the same function as `model`.

    Args:
        model: a functional or `Sequential` Keras model (subclassed models cannot be
            cloned from their configs).
        implementation: one of `keras_sasa.ops.window_attention.IMPLEMENTATIONS`.
            Defaults to `"unrolled"`, the implementation that converts to TFLite.

    Returns:
        A new `keras.Model` with the same weights.

    Example:

    >>> fast = keras_sasa.models.SASAResNet26(input_shape=(32, 32, 3), stem="conv_small")
    >>> exportable = keras_sasa.export.with_implementation(fast, "unrolled")
    """
    if not isinstance(model, keras.Model):
        raise TypeError(
            f"Expected argument `model` to be a keras.Model. Received model={model!r} "
            f"of type {type(model).__name__}"
        )
    if implementation not in IMPLEMENTATIONS:
        raise ValueError(
            f"Invalid value for argument `implementation`. Expected one of {IMPLEMENTATIONS}. "
            f"Received implementation={implementation!r}"
        )

    def clone_layer(layer):
        config = layer.get_config()
        if isinstance(layer, LocalSelfAttention2D):
            config["implementation"] = implementation
        return layer.__class__.from_config(config)

    try:
        clone = keras.models.clone_model(model, clone_function=clone_layer, recursive=True)
    except ValueError as error:
        raise ValueError(
            f"Cannot rebuild model {model.name!r} from its layers' configs (only functional "
            f"and Sequential models can be): {error}"
        ) from None
    clone.set_weights(model.get_weights())
    return clone


def save_model(model, path):
    """Exports `model` as a TensorFlow SavedModel for serving (`model.export`).

    The SavedModel's `serve` endpoint takes the model's inputs and gives its outputs
    (the same numbers as Keras, to float32 rounding). Load it with
    `keras.layers.TFSMLayer(path, call_endpoint="serve")` or `tf.saved_model.load(path)`.

    Args:
        model: a Keras model.
        path: directory to write.

    Returns:
        `path`.
    """
    model.export(os.fspath(path), format="tf_saved_model", verbose=False)
    return path


def to_tflite(model, path=None, implementation="unrolled"):
    """Converts `model` to TFLite with the builtin op set only (no select TF ops).

    The model is cloned with its `LocalSelfAttention2D` layers switched to `implementation`
    (see `with_implementation`), then converted by `tf.lite.TFLiteConverter.from_keras_model`
    with `supported_ops = [TFLITE_BUILTINS]`. Fix the height and width of the model's input
    (`keras.Input((H, W, C))`): the converted graph keeps a free batch dimension only.

    Args:
        model: a functional or `Sequential` Keras model.
        path: where to write the `.tflite` file, or None to write nothing.
        implementation: the attention implementation converted. Defaults to `"unrolled"`,
            the only one made of builtin ops; `None` converts the model as it is.

    Returns:
        The TFLite flatbuffer, as bytes.

    Raises:
        ValueError: the input's height or width is unknown, or the model uses ops that
            are not TFLite builtins (the message lists them).
    """
    import tensorflow as tf

    for shape in _input_shapes(model):
        if len(shape) == 4 and (shape[1] is None or shape[2] is None):
            raise ValueError(
                "TFLite export needs a fixed input height and width; build the model on "
                f"keras.Input((height, width, channels)). Received input shape {shape}"
            )
    if implementation is not None:
        model = with_implementation(model, implementation)
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    try:
        flatbuffer = converter.convert()
    except Exception as error:  # The converter raises its own ConverterError.
        # The converter's message lists the ops it would need from TF: "TF Select ops: ...".
        missing = re.search(r"TF Select ops: ([^\n]*)", str(error))
        raise ValueError(
            f"Model {model.name!r} does not convert to TFLite builtin ops; ops that are "
            f"not builtins: {missing.group(1).strip() if missing else 'see the converter log'}"
        ) from error
    if path is not None:
        with open(path, "wb") as f:
            f.write(flatbuffer)
    return flatbuffer


def _input_shapes(model):
    inputs = model.inputs if model.inputs else []
    return [tuple(x.shape) for x in inputs]
