"""The README's first model, LocalSelfAttention2D in a Sequential model, trained on digits.

scikit-learn's 1,797 8x8 handwritten digits need no download. The model is the README's
quickstart with a one-channel input; it is trained with `fit`, evaluated on a held-out
fifth of the digits, saved as a `.keras` file and loaded back. Loading needs
`import keras_sasa` first: importing it registers the layers with Keras.

    python examples/quickstart_digits.py            # 15 epochs
    python examples/quickstart_digits.py --quick    # 1 epoch on 256 images, a smoke test
"""

import argparse
import os
import tempfile

import keras
import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

import keras_sasa


def digits():
    """Train and test images (float32 in [0, 1], shape (n, 8, 8, 1)) and labels."""
    data = load_digits()
    images = (data.images[..., None] / 16.0).astype("float32")
    return train_test_split(
        images, data.target, test_size=0.2, stratify=data.target, random_state=0
    )


def build_model():
    return keras.Sequential(
        [
            keras.Input((None, None, 1)),
            keras.layers.Conv2D(32, 3, padding="same"),
            keras_sasa.LocalSelfAttention2D(32, kernel_size=7, num_heads=4),
            keras_sasa.LocalSelfAttention2D(64, kernel_size=7, num_heads=8, strides=2),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(10),
        ]
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 epoch on 256 images")
    parser.add_argument("--epochs", type=int, default=15)
    args = parser.parse_args()
    epochs = 1 if args.quick else args.epochs

    keras.utils.set_random_seed(0)
    x_train, x_test, y_train, y_test = digits()
    if args.quick:
        x_train, y_train = x_train[:256], y_train[:256]
    model = build_model()
    model.compile(
        optimizer=keras.optimizers.Adam(2e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
        jit_compile=not args.quick,  # XLA compiling: a fixed cost a smoke test can skip.
    )
    model.fit(x_train, y_train, batch_size=64, epochs=epochs, verbose=2)
    loss, accuracy = model.evaluate(x_test, y_test, verbose=0)
    print(f"test accuracy {accuracy:.4f} ({len(x_test)} images), loss {loss:.4f}")

    # `import keras_sasa` (above) is what lets load_model find LocalSelfAttention2D.
    path = os.path.join(tempfile.mkdtemp(), "quickstart.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    difference = np.abs(loaded.predict(x_test, verbose=0) - model.predict(x_test, verbose=0))
    print(f"reloaded {path}: max difference {difference.max():.1e}")


if __name__ == "__main__":
    main()
