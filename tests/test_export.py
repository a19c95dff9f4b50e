"""Export for serving: SavedModel and builtin-only TFLite give Keras's numbers; the CLI."""

import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_sasa
from keras_sasa import LocalSelfAttention2D
from keras_sasa import cli
from keras_sasa import export


def small_model(implementation="auto", input_shape=(12, 12, 3)):
    """Two attention layers covering strides, dilation, both borders and biases."""
    inputs = keras.Input(input_shape)
    x = keras.layers.Conv2D(8, 1, name="proj")(inputs)
    x = LocalSelfAttention2D(
        8, 3, 2, strides=2, use_bias=True, implementation=implementation, name="attn1"
    )(x)
    x = LocalSelfAttention2D(
        8, 5, 2, dilation_rate=2, border="zeros", implementation=implementation, name="attn2"
    )(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(4, name="head")(x)
    model = keras.Model(inputs, outputs, name="small_sasa")
    # Non-zero biases, so that a bias lost in the export would show.
    model.get_layer("attn1").qkv_bias.assign(np.linspace(-1, 1, 24).astype("float32"))
    return model


def images(batch=2, shape=(12, 12, 3), seed=0):
    return np.random.default_rng(seed).normal(size=(batch, *shape)).astype("float32")


# LiteRT where installed (the test extra installs it), else tf.lite.Interpreter.
run_tflite = export.run_tflite


def test_with_implementation_swaps_the_attention_and_keeps_the_function():
    model = small_model("blocked")
    clone = export.with_implementation(model, "unrolled")
    assert clone is not model
    for name in ("attn1", "attn2"):
        assert clone.get_layer(name).implementation == "unrolled"
        assert model.get_layer(name).implementation == "blocked"
    x = images()
    np.testing.assert_allclose(np.asarray(clone(x)), np.asarray(model(x)), atol=1e-5)


def test_with_implementation_reaches_nested_models():
    inner = keras.Sequential(
        [keras.Input((6, 6, 4)), LocalSelfAttention2D(4, 3, 2, name="inner_attn")], name="inner"
    )
    inputs = keras.Input((6, 6, 4))
    model = keras.Model(inputs, inner(inputs))
    clone = export.with_implementation(model, "reference")
    assert clone.get_layer("inner").get_layer("inner_attn").implementation == "reference"
    x = images(1, (6, 6, 4))
    np.testing.assert_allclose(np.asarray(clone(x)), np.asarray(model(x)), atol=1e-5)


def test_with_implementation_rejects_bad_arguments():
    with pytest.raises(ValueError, match="implementation='fast'"):
        export.with_implementation(small_model(), "fast")
    with pytest.raises(TypeError, match="keras.Model"):
        export.with_implementation(LocalSelfAttention2D(4, 3, 2), "unrolled")


def test_saved_model_serves_the_keras_outputs(tmp_path):
    model = small_model()  # The fast blocked attention, exported as it is.
    path = export.save_model(model, tmp_path / "saved")
    served = keras.layers.TFSMLayer(str(path), call_endpoint="serve")
    x = images(3)
    np.testing.assert_allclose(np.asarray(served(x)), np.asarray(model(x)), atol=1e-5)


@pytest.fixture(scope="module")
def blocked_model_and_tflite():
    model = small_model("blocked")
    return model, export.to_tflite(model)


def test_tflite_converts_with_builtin_ops_and_gives_the_keras_outputs(blocked_model_and_tflite):
    # to_tflite restricts the converter to TFLITE_BUILTINS: success means no select TF op.
    model, flatbuffer = blocked_model_and_tflite
    x = images(2)
    np.testing.assert_allclose(run_tflite(flatbuffer, x), np.asarray(model(x)), atol=1e-4)


def test_tflite_graph_holds_only_builtin_ops(blocked_model_and_tflite):
    interpreter = export.tflite_interpreter(blocked_model_and_tflite[1])
    names = {op["op_name"] for op in interpreter._get_ops_details()}
    assert "SOFTMAX" in names and "PAD" in names
    assert not any(name.startswith("Flex") or name == "CUSTOM" for name in names)


def chunked_model():
    """One attention layer whose inference graph attends its 4 heads in 4 groups, and
    each head's blocks in 2 bands (`default_chunks`: 640 000 bytes of logits per head
    and image)."""
    assert keras_sasa.ops.window_attention.default_chunks(40, 40, 7, 4) == (4, 2)
    keras.utils.set_random_seed(3)
    inputs = keras.Input((40, 40, 8))
    return keras.Model(inputs, LocalSelfAttention2D(8, 7, num_heads=4)(inputs))


def test_tflite_runs_the_attention_in_chunks():
    model = chunked_model()
    x = images(2, (40, 40, 8))
    np.testing.assert_allclose(
        run_tflite(export.to_tflite(model), x), np.asarray(model(x)), atol=1e-4
    )


@pytest.mark.parametrize("window", ["block", "sliding"])
def test_attention_stem_converts_with_builtin_ops(window):
    inputs = keras.Input((10, 10, 3))
    x = keras_sasa.AttentionStem2D(8, kernel_size=4, num_heads=2, window=window)(inputs)
    x = LocalSelfAttention2D(8, 3, 2)(x)
    model = keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(x))
    x = images(2, (10, 10, 3))
    np.testing.assert_allclose(
        run_tflite(export.to_tflite(model), x), np.asarray(model(x)), atol=1e-4
    )


def test_tflite_interpreter_is_litert_where_installed_and_tf_lite_otherwise(
    blocked_model_and_tflite, tmp_path, monkeypatch
):
    model, flatbuffer = blocked_model_and_tflite
    pytest.importorskip("ai_edge_litert")  # Only where LiteRT is installed (the test extra).
    from ai_edge_litert.interpreter import Interpreter

    assert isinstance(export.tflite_interpreter(flatbuffer), Interpreter)
    x = images(3)
    litert = run_tflite(flatbuffer, x)
    # Without LiteRT (its import fails), TensorFlow's interpreter, with the same numbers.
    monkeypatch.setitem(sys.modules, "ai_edge_litert.interpreter", None)
    assert isinstance(export.tflite_interpreter(flatbuffer), tf.lite.Interpreter)
    (tmp_path / "model.tflite").write_bytes(flatbuffer)
    np.testing.assert_array_equal(run_tflite(tmp_path / "model.tflite", x), litert)
    np.testing.assert_allclose(litert, np.asarray(model(x)), atol=1e-4)
    with pytest.raises(ValueError, match="one of"):
        export.tflite_interpreter()


def test_tflite_names_the_ops_that_are_not_builtins():
    with pytest.raises(ValueError, match="ExtractImagePatches"):
        export.to_tflite(small_model("reference", (6, 6, 3)), implementation=None)


def test_tflite_needs_a_fixed_height_and_width():
    with pytest.raises(ValueError, match=r"\(None, None, None, 3\)"):
        export.to_tflite(small_model(input_shape=(None, None, 3)))


@pytest.fixture
def model_file(tmp_path):
    path = tmp_path / "model.keras"
    small_model().save(path)
    return path


def test_cli_exports_a_saved_model(model_file, tmp_path):
    output = tmp_path / "served"
    assert (
        cli.main(["export", str(model_file), "--format", "saved_model", "--output", str(output)])
        == 0
    )
    model = keras.models.load_model(model_file)
    x = images(2)
    loaded = tf.saved_model.load(str(output))
    np.testing.assert_allclose(loaded.serve(x).numpy(), np.asarray(model(x)), atol=1e-5)


def test_cli_exports_tflite(model_file, tmp_path):
    output = tmp_path / "model.tflite"
    assert cli.main(["export", str(model_file), "--format", "tflite", "--output", str(output)]) == 0
    model = keras.models.load_model(model_file)
    x = images(1)
    np.testing.assert_allclose(run_tflite(output.read_bytes(), x), np.asarray(model(x)), atol=1e-4)


@pytest.mark.parametrize("content", [b"not a model", b"PK\x03\x04 truncated zip"])
def test_cli_export_rejects_a_file_that_is_not_a_keras_model(tmp_path, capsys, content):
    path = tmp_path / "model.keras"
    path.write_bytes(content)
    code = cli.main(["export", str(path), "--format", "tflite", "--output", str(tmp_path / "x")])
    assert code != 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "is not a Keras model" in err and str(path) in err


def test_cli_export_rejects_a_missing_file(tmp_path, capsys):
    path = tmp_path / "missing.keras"
    assert cli.main(["export", str(path), "--format", "saved_model", "--output", "x"]) != 0
    assert capsys.readouterr().err == f"error: no such model file: {path}\n"


# Loading a .keras file whose classes are not all registered.


def _with_class_renamed(source, target, old, new):
    """A copy of the .keras file `source` whose config calls class `old` `new`."""
    import zipfile

    with zipfile.ZipFile(source) as archive, zipfile.ZipFile(target, "w") as copy:
        for item in archive.infolist():
            content = archive.read(item)
            if item.filename == "config.json":
                content = content.replace(old.encode(), new.encode())
            copy.writestr(item, content)
    return target


def test_load_model_reads_what_keras_saving_reads_once_keras_sasa_is_imported(model_file):
    loaded = keras_sasa.load_model(model_file)
    reference = keras.saving.load_model(model_file)
    x = images(2)
    np.testing.assert_array_equal(np.asarray(loaded(x)), np.asarray(reference(x)))


def test_load_model_names_a_keras_sasa_class_this_version_lacks(model_file, tmp_path):
    renamed = _with_class_renamed(
        model_file, tmp_path / "renamed.keras", "LocalSelfAttention2D", "LocalSelfAttention9D"
    )
    with pytest.raises(TypeError) as raised:
        keras_sasa.load_model(renamed)
    assert str(raised.value) == (
        f"{renamed} needs keras_sasa's 'LocalSelfAttention9D', which keras_sasa "
        f"{keras_sasa.__version__} does not have: the file was saved by another version of "
        "keras_sasa."
    )
    code = cli.main(["export", str(renamed), "--format", "saved_model", "--output", "x"])
    assert code == 2


def test_load_model_names_a_class_of_another_package(model_file, tmp_path):
    renamed = _with_class_renamed(model_file, tmp_path / "other.keras", "keras_sasa>", "other>")
    with pytest.raises(TypeError, match="needs the class 'LocalSelfAttention2D' \\(registered as"):
        keras_sasa.load_model(renamed)
