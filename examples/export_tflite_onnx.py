"""Export to TFLite and ONNX (`keras_sasa.export`), run the files, compare with Keras.

TFLite: `export.to_tflite` converts with TFLite's builtin ops only (the attention layers
take their `unrolled` implementation) and `export.run_tflite` runs the flatbuffer with
LiteRT where it is installed. ONNX: `export.to_onnx` is Keras's exporter, run here with
ONNX Runtime (`pip install "keras-sasa[onnx]"`; without it that part is skipped).

    python examples/export_tflite_onnx.py                        # trains 3 epochs first
    python examples/export_tflite_onnx.py --model model.keras    # a model of your own
    python examples/export_tflite_onnx.py --quick                # exports untrained
"""

import argparse
import importlib.util
import os
import tempfile

import keras
import numpy as np
from sklearn.datasets import load_digits

import keras_sasa
from keras_sasa import export


def build_and_train(epochs):
    # The input's height and width must be fixed for export; the batch stays free.
    model = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(16, 3, padding="same"),
            keras_sasa.LocalSelfAttention2D(16, kernel_size=7, num_heads=4),
            keras_sasa.LocalSelfAttention2D(32, kernel_size=7, num_heads=4, strides=2),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )
    if epochs:
        digits = load_digits()
        model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
        x = (digits.images[..., None] / 16.0).astype("float32")
        model.fit(x, digits.target, batch_size=64, epochs=epochs, verbose=2)
    return model


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="a .keras file whose input has a fixed size")
    parser.add_argument("--output-dir", default=tempfile.mkdtemp())
    parser.add_argument("--quick", action="store_true", help="export an untrained model")
    args = parser.parse_args()
    keras.utils.set_random_seed(0)
    if args.model:
        model = keras.saving.load_model(args.model)  # Needs `import keras_sasa` (above).
    else:
        model = build_and_train(epochs=0 if args.quick else 3)
    images = np.random.default_rng(0).uniform(size=(5, *model.input_shape[1:]))
    images = images.astype("float32")
    expected = np.asarray(model.predict(images, verbose=0))

    tflite_path = os.path.join(args.output_dir, "model.tflite")
    flatbuffer = export.to_tflite(model, tflite_path)
    difference = np.abs(export.run_tflite(flatbuffer, images) - expected).max()
    print(f"TFLite: {tflite_path}, {len(flatbuffer):,} bytes, max difference {difference:.1e}")

    if importlib.util.find_spec("tf2onnx") and importlib.util.find_spec("onnxruntime"):
        import onnxruntime

        onnx_path = os.path.join(args.output_dir, "model.onnx")
        export.to_onnx(model, onnx_path)
        session = onnxruntime.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
        (outputs,) = session.run(None, {session.get_inputs()[0].name: images})
        difference = np.abs(outputs - expected).max()
        size = os.path.getsize(onnx_path)
        print(f"ONNX: {onnx_path}, {size:,} bytes, max difference {difference:.1e}")
    else:
        print('ONNX: skipped (pip install "keras-sasa[onnx]" for tf2onnx and onnxruntime)')


if __name__ == "__main__":
    main()
