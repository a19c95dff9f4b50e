"""Export for serving: TensorFlow SavedModel, ONNX, and TFLite with builtin ops only.

- `save_model`: `model.export` as a SavedModel whose `serve` endpoint gives Keras's numbers.
- `to_onnx`: `model.export(format="onnx")` (tf2onnx) with the attention layers on an
  implementation that ONNX Runtime runs (the extract_patches reference gives a file it
  refuses), any batch size; needs `pip install "keras-sasa[onnx]"`.
- `to_tflite`: a `.tflite` flatbuffer from `tf.lite.TFLiteConverter` restricted to
  `TFLITE_BUILTINS` (no select TF ops). The model is first cloned with its attention on
  `implementation="blocked"` and the same weights (`with_implementation`): inference runs
  the blocked attention with its select mask, whose graph keeps to builtins (gathers,
  batched matmuls, transposes of at most 5 dimensions, a 2-D softmax); the extract_patches
  reference uses ExtractImagePatches, which TFLite lacks. `implementation="unrolled"` (a
  sum over the k*k window offsets) converts too, 1.4x (k = 3) to 2.7x (k = 7) slower in
  LiteRT (docs/serving.md).
  `quantize="dynamic"` stores int8 weights; `quantize="int8"` computes in int8 throughout,
  calibrated on representative images (`float_ops` lists what stays float).
- `with_implementation`: that clone, useful on its own (e.g. to compare implementations).
- `tflite_interpreter`, `run_tflite`: run a `.tflite` file with LiteRT
  (`ai_edge_litert.interpreter.Interpreter`, `pip install "keras-sasa[litert]"`) where it
  is installed, else with `tf.lite.Interpreter` (deprecated in TF 2.21 in LiteRT's favour).

`AttentionStem2D` converts as it is: both of its windows keep tensors within 6 dimensions
and products within rank 4.
"""

import os
import re
import warnings

import keras
import numpy as np

from keras_sasa import _validation as check
from keras_sasa.layers import LocalSelfAttention2D
from keras_sasa.ops.window_attention import IMPLEMENTATIONS

FORMATS = ("saved_model", "onnx", "tflite")
# `to_tflite`'s post-training quantization: none, int8 weights only, or int8 throughout.
QUANTIZE_MODES = (None, "dynamic", "int8")

# What `to_onnx` needs beyond TensorFlow and Keras, and how to get it.
ONNX_INSTALL_HINT = 'pip install "keras-sasa[onnx]"'


def with_implementation(model, implementation="unrolled"):
    """A copy of `model` whose `LocalSelfAttention2D` layers use `implementation`.

    Every layer is rebuilt from its config (nested models included), with `implementation`
    swapped in the attention layers' configs, and the weights are copied: the copy computes
    the same function as `model`.

    Args:
        model: a functional or `Sequential` Keras model (subclassed models cannot be
            cloned from their configs).
        implementation: one of `keras_sasa.ops.window_attention.IMPLEMENTATIONS`.
            Defaults to `"unrolled"`, the sum over window offsets (TFLite builtins, any
            Keras backend).

    Returns:
        A new `keras.Model` with the same weights.

    Example:

    >>> fast = keras_sasa.models.SASAResNet26(input_shape=(32, 32, 3), stem="conv_small")
    >>> exportable = keras_sasa.export.with_implementation(fast, "unrolled")
    """
    if not isinstance(model, keras.Model):
        raise check.error("model", model, "Expected a keras.Model", TypeError)
    check.one_of("implementation", implementation, IMPLEMENTATIONS)

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


def require_onnx():
    """Imports what ONNX export needs; ModuleNotFoundError saying what to install otherwise.

    Keras's exporter converts with `tf2onnx`, which writes with `onnx`. Both are optional
    dependencies (the `onnx` extra, with `onnxruntime` to run the files).
    """
    for name in ("onnx", "tf2onnx"):
        try:
            __import__(name)
        except ImportError:
            raise ModuleNotFoundError(
                f"ONNX export needs the {name} package, which is not installed: "
                f"{ONNX_INSTALL_HINT}",
                name=name,
            ) from None


def to_onnx(model, path, implementation="auto", opset=None):
    """Exports `model` as an ONNX file with Keras's exporter (`model.export(format="onnx")`).

    The graph takes any batch size; the input's height and width are the model's, fixed.
    The blocked implementation (what `"auto"` runs) and the unrolled one convert to ONNX
    ops that ONNX Runtime runs; the extract_patches `"reference"` converts to a graph ONNX
    Runtime refuses to load, so by default `LocalSelfAttention2D` layers on the reference
    are switched to the blocked implementation first (`with_implementation`, same
    weights; the model passed in is not changed). Keras exports only models that have
    been called, so the model (or its copy) is called once on a batch of zeros.

    Args:
        model: a Keras model (functional or `Sequential` if a layer needs switching).
        path: the `.onnx` file to write.
        implementation: `"auto"` (default): the reference layers switched to the blocked
            implementation, the others kept; `"blocked"` or `"unrolled"`: every attention
            layer switched to it; `None`: the model exported as it is.
        opset: the ONNX opset, or None for tf2onnx's default.

    Returns:
        `path`.

    Raises:
        ModuleNotFoundError: onnx or tf2onnx is not installed (the message says what to
            install).
        ValueError: the input's height or width is unknown, or `implementation` is not
            one that exports.
    """
    if implementation not in (None, "auto", "blocked", "unrolled"):
        raise check.error(
            "implementation",
            implementation,
            "Expected 'auto', 'blocked', 'unrolled' or None (the reference does not run in "
            "ONNX Runtime)",
        )
    require_onnx()
    _check_fixed_image_size(model, "ONNX")
    layers = list(_attention_layers(model))
    if implementation == "auto" and any(x.implementation == "reference" for x in layers):
        model = with_implementation(model, "blocked")
    elif implementation in ("blocked", "unrolled") and any(
        _runs(x.implementation) != implementation for x in layers
    ):
        model = with_implementation(model, implementation)
    # Keras refuses a model that was never called; one call on zeros marks it called and
    # changes nothing (inference mode).
    zeros = [keras.ops.zeros((1, *x.shape[1:]), dtype=x.dtype) for x in model.inputs]
    model(zeros[0] if len(zeros) == 1 else zeros, training=False)
    with warnings.catch_warnings():
        # Keras's tf2onnx patch for NumPy 2 probes np.object, which warns; nothing to act on.
        warnings.filterwarnings("ignore", message=".*np.object", category=FutureWarning)
        model.export(os.fspath(path), format="onnx", verbose=False, opset_version=opset)
    return path


def _runs(implementation):
    """The implementation a layer runs: "auto" runs the blocked one (window_attention)."""
    return "blocked" if implementation == "auto" else implementation


def _attention_layers(model):
    """Every LocalSelfAttention2D in `model`, nested models included."""
    for layer in model.layers:
        if isinstance(layer, LocalSelfAttention2D):
            yield layer
        elif isinstance(layer, keras.Model):
            yield from _attention_layers(layer)


def _check_fixed_image_size(model, format_name):
    for shape in _input_shapes(model):
        if len(shape) == 4 and (shape[1] is None or shape[2] is None):
            raise ValueError(
                f"{format_name} export needs a fixed input height and width; build the model "
                f"on keras.Input((height, width, channels)). Received input shape {shape}"
            )


def to_tflite(
    model, path=None, implementation="blocked", quantize=None, representative_images=None
):
    """Converts `model` to TFLite with the builtin op set only (no select TF ops).

    The model is cloned with its `LocalSelfAttention2D` layers switched to `implementation`
    (see `with_implementation`), then converted by `tf.lite.TFLiteConverter.from_keras_model`
    with `supported_ops = [TFLITE_BUILTINS]`. Fix the height and width of the model's input
    (`keras.Input((H, W, C))`): the converted graph keeps a free batch dimension only.

    Post-training quantization (`quantize`):

    - `"dynamic"`: int8 weights, float activations (the converter's dynamic range
      quantization); needs no data.
    - `"int8"`: int8 weights and activations, the activation ranges calibrated on
      `representative_images`; the input and output stay float32 (a quantize and a
      dequantize op at the ends), and an op with no int8 kernel stays float
      (`float_ops` lists them).

    Args:
        model: a functional or `Sequential` Keras model.
        path: where to write the `.tflite` file, or None to write nothing.
        implementation: the attention implementation converted: `"blocked"` (default)
            or `"unrolled"`, both made of builtin ops; `None` converts the model as it is.
        quantize: None (float32), `"dynamic"` or `"int8"`.
        representative_images: with `quantize="int8"`, a float32 array
            `(count, H, W, C)` of typical inputs (e.g. 200 training images, preprocessed
            as for the model), fed one at a time to calibrate.

    Returns:
        The TFLite flatbuffer, as bytes.

    Raises:
        ValueError: the input's height or width is unknown, the model uses ops that
            are not TFLite builtins (the message lists them), `quantize` is not one of
            `QUANTIZE_MODES`, or `"int8"` has no `representative_images`.
    """
    import tensorflow as tf

    check.one_of("quantize", quantize, QUANTIZE_MODES)
    if quantize == "int8" and representative_images is None:
        raise check.error(
            "representative_images",
            representative_images,
            "quantize='int8' calibrates on images: expected an array (count, H, W, C)",
        )
    _check_fixed_image_size(model, "TFLite")
    if implementation is not None:
        model = with_implementation(model, implementation)
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if quantize is not None:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if quantize == "int8":

        def batches():
            for image in representative_images:
                yield [keras.ops.convert_to_numpy(image)[None].astype("float32")]

        converter.representative_dataset = batches
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


def tflite_interpreter(flatbuffer=None, path=None, num_threads=None):
    """A TFLite interpreter for a flatbuffer (bytes) or a `.tflite` file at `path`.

    LiteRT's `ai_edge_litert.interpreter.Interpreter` where the `ai-edge-litert` package
    is installed (TFLite's runtime, now maintained apart from TensorFlow), else TensorFlow's
    `tf.lite.Interpreter`, whose deprecation notice is silenced: the two take the same
    arguments and give the same numbers. `num_threads`: the interpreter's CPU threads
    (None: its default).
    """
    if (flatbuffer is None) == (path is None):
        raise ValueError("Pass one of `flatbuffer` (bytes) or `path` (a .tflite file).")
    kwargs = {"model_content": flatbuffer, "model_path": None if path is None else str(path)}
    if num_threads is not None:
        kwargs["num_threads"] = num_threads
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        import tensorflow as tf

        with warnings.catch_warnings():  # "tf.lite.Interpreter is deprecated ... LiteRT".
            warnings.simplefilter("ignore")
            return tf.lite.Interpreter(**kwargs)
    return Interpreter(**kwargs)


def float_ops(flatbuffer):
    """The ops of a TFLite flatbuffer that compute in float32: `{op name: count}`.

    An op counts as float when its first output is float32. In a full-integer file with
    float input and output, that is the closing DEQUANTIZE and the ops without an int8
    kernel.
    """
    interpreter = tflite_interpreter(flatbuffer=bytes(flatbuffer))
    tensors = {t["index"]: t["dtype"] for t in interpreter.get_tensor_details()}
    counts = {}
    for op in interpreter._get_ops_details():
        outputs = [i for i in op["outputs"] if i >= 0]
        if outputs and tensors.get(outputs[0]) == np.float32:
            counts[op["op_name"]] = counts.get(op["op_name"], 0) + 1
    return dict(sorted(counts.items()))


def run_tflite(flatbuffer, x):
    """Runs a one-input TFLite model (bytes, or a path to a `.tflite` file) on the batch `x`.

    The interpreter (`tflite_interpreter`) is resized to `x`'s batch: the converted graph
    keeps a free batch dimension. Returns the first output, as a NumPy array.
    """
    if isinstance(flatbuffer, (bytes, bytearray)):
        interpreter = tflite_interpreter(flatbuffer=bytes(flatbuffer))
    else:
        interpreter = tflite_interpreter(path=flatbuffer)
    source = interpreter.get_input_details()[0]
    interpreter.resize_tensor_input(source["index"], x.shape)
    interpreter.allocate_tensors()
    interpreter.set_tensor(source["index"], x)
    interpreter.invoke()
    return interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
