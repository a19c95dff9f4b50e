"""ONNX export: ONNX Runtime gives Keras's numbers at any batch size; what cannot export is
refused. (The export command writing ONNX files: test_cli.py.)"""

import numpy as np
import onnxruntime
import pytest

import keras_sasa
from keras_sasa import export
from test_export import chunked_model
from test_export import small_model


def images(batch, shape, seed=0):
    return np.random.default_rng(seed).normal(size=(batch, *shape)).astype("float32")


def run_onnx(path, x):
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (source,) = session.get_inputs()
    return session.run(None, {source.name: x})[0], source.shape


@pytest.mark.parametrize("implementation", ["reference", "unrolled"])
def test_attention_layers_export_and_run_at_another_batch_size(tmp_path, implementation):
    # The reference is switched to the blocked implementation (its own graph is refused by
    # ONNX Runtime); the unrolled one is exported as it is. (The blocked one: the ResNet
    # tests.) The traced call has batch 1; the file runs batch 5.
    model = small_model(implementation)
    path = export.to_onnx(model, tmp_path / "model.onnx")
    x = images(5, (12, 12, 3))
    outputs, input_shape = run_onnx(path, x)
    assert not isinstance(input_shape[0], int) and input_shape[1:] == [12, 12, 3]
    np.testing.assert_allclose(outputs, np.asarray(model(x)), atol=1e-4)
    assert model.get_layer("attn1").implementation == implementation  # The model is kept.


@pytest.mark.parametrize("stem", ["attention_small", "conv_small"])
def test_sasa_resnet26_exports_with_each_small_image_stem(tmp_path, stem):
    model = keras_sasa.models.SASAResNet26(
        input_shape=(16, 16, 3), stem=stem, base_width=4, num_heads=2, classes=5
    )
    path = export.to_onnx(model, tmp_path / "model.onnx")
    x = np.random.default_rng(2).uniform(size=(3, 16, 16, 3)).astype("float32")
    outputs, _ = run_onnx(path, x)
    assert outputs.shape == (3, 5)
    np.testing.assert_allclose(outputs, np.asarray(model(x)), atol=1e-4)


def test_attention_in_chunks_exports(tmp_path):
    model = chunked_model()
    x = images(3, (40, 40, 8))
    outputs, _ = run_onnx(export.to_onnx(model, tmp_path / "model.onnx"), x)
    np.testing.assert_allclose(outputs, np.asarray(model(x)), atol=1e-4)


def test_to_onnx_rejects_what_does_not_export(tmp_path):
    with pytest.raises(ValueError, match="implementation='reference'"):
        export.to_onnx(small_model("blocked"), tmp_path / "m.onnx", "reference")
    with pytest.raises(ValueError, match=r"fixed input height and width.*\(None, None, None, 3\)"):
        export.to_onnx(small_model("blocked", (None, None, 3)), tmp_path / "m.onnx")
    assert not (tmp_path / "m.onnx").exists()
