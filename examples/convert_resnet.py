"""Turn keras.applications' ResNet-50 into a SASA model with `keras_sasa.models.to_attention`.

Every 3x3 convolution becomes a `LocalSelfAttention2D` (k = 7, 8 heads) and the stem's
7x7 convolution is kept: the paper's "conv stem + attention" ResNet-50 (Table 1: 18.0M
parameters). The other layers keep their weights (here ResNet-50's random ones; pass
`weights="imagenet"` where the weights can be downloaded). The converted model trains
like any Keras model, and saves and loads as a `.keras` file.

    python examples/convert_resnet.py            # 224 x 224, the paper's size
    python examples/convert_resnet.py --quick    # 32 x 32 images, 10 classes
"""

import argparse
import os
import tempfile

import keras
import numpy as np

import keras_sasa
from keras_sasa import models


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="32 x 32 images, 10 classes")
    args = parser.parse_args()
    keras.utils.set_random_seed(0)
    size, classes = (32, 10) if args.quick else (224, 1000)
    cnn = keras.applications.ResNet50(weights=None, input_shape=(size, size, 3), classes=classes)
    sasa = models.to_attention(cnn, kernel_size=7, num_heads=8)

    attention = [x for x in sasa.layers if isinstance(x, keras_sasa.LocalSelfAttention2D)]
    print(
        f"ResNet50 at {size} x {size}: {cnn.count_params():,} -> {sasa.count_params():,} "
        f"parameters, {len(attention)} attention layers, "
        f"{models.count_flops(cnn) / 1e9:.2f} -> {models.count_flops(sasa) / 1e9:.2f} GFLOPs"
    )
    kept = [layer.name for layer in sasa.layers if models.convert.is_spatial_conv(layer)]
    print("spatial convolutions kept:", ", ".join(kept))

    # One training step on random images, as with any Keras model. (Clipped: the random
    # weights and a batch of 4 give batch norm, and so the gradients, a wide range.)
    images = np.random.default_rng(0).uniform(size=(4, size, size, 3)).astype("float32")
    labels = np.arange(4) % classes
    sasa.compile(keras.optimizers.SGD(0.01, global_clipnorm=1.0), "sparse_categorical_crossentropy")
    print(f"one training step: loss {float(sasa.train_on_batch(images, labels)):.4f}")

    path = os.path.join(tempfile.mkdtemp(), "sasa_resnet50.keras")
    sasa.save(path)
    loaded = keras.saving.load_model(path)  # Needs `import keras_sasa` (above).
    difference = np.abs(np.asarray(loaded(images)) - np.asarray(sasa(images))).max()
    print(f"reloaded from {os.path.basename(path)}: max difference {difference}")


if __name__ == "__main__":
    main()
