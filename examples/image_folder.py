"""Your own images: a folder with one subfolder per class (or a TFDS name), read by
`keras_sasa.data` and trained with a SASA-ResNet-26 from the functional builder.

The folder's layout is that of `keras.utils.image_dataset_from_directory`
(flowers/daisy/1.jpg, flowers/tulip/2.png, ...); without train/ and test/ subfolders a
fixed 20% of each class is held out as the test split. The same data trains with the
paper's recipe from the command line: `python -m keras_sasa train --dataset FOLDER`.

    python examples/image_folder.py --dataset path/to/flowers --epochs 10
    python examples/image_folder.py --dataset cifar10           # any TFDS name (downloads)
    python examples/image_folder.py --quick   # writes a small folder of digit PNGs first
"""

import argparse
import os
import tempfile

import keras
import numpy as np

from keras_sasa import data
from keras_sasa import models


def write_digit_folder(root, per_class):
    """scikit-learn's 8x8 digits as PNG files, one subfolder per digit."""
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    pixels = np.rint(digits.images * (255 / 16)).astype(np.uint8)
    for digit in range(10):
        os.makedirs(os.path.join(root, str(digit)), exist_ok=True)
        for index, image in enumerate(pixels[digits.target == digit][:per_class]):
            Image.fromarray(image).save(os.path.join(root, str(digit), f"{index:03d}.png"))
    return root


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", help="a folder of class subfolders, or a TFDS name")
    parser.add_argument("--data-dir", help="TFDS data directory (default: TFDS's)")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--quick", action="store_true", help="1 epoch, 12 images a class")
    args = parser.parse_args()
    epochs = 1 if args.quick else args.epochs
    data_dir = args.data_dir
    dataset = args.dataset
    if dataset is None:  # A made-up folder: kept, with its TFDS copy, in a temporary folder.
        scratch = tempfile.mkdtemp()
        dataset = write_digit_folder(
            os.path.join(scratch, "digits"), per_class=12 if args.quick else 180
        )
        data_dir = data_dir or os.path.join(scratch, "tfds")

    # Reads the folder into TFDS's format once (again only if its files change).
    info = data.dataset_info(dataset, data_dir=data_dir, download=True)
    print(f"{dataset}: {info.num_classes} classes, images {info.image_shape}, {info.splits}")
    height, width, channels = info.image_shape
    small = height is not None and max(height, width) <= 64
    size = None if small else 128  # Images of several sizes: crop and resize to 128.
    train = data.load_dataset(
        dataset, info.train_split, args.batch_size, data_dir=data_dir,
        image_size=size, training=True, seed=0,
    )  # fmt: skip
    test = data.load_dataset(
        dataset, info.eval_split, args.batch_size, data_dir=data_dir, image_size=size
    )

    keras.utils.set_random_seed(0)
    model = models.SASAResNet26(
        input_shape=(height or size, width or size, channels),
        classes=info.num_classes,
        stem="conv_small" if small else "conv",
        base_width=4 if args.quick else 16,
        num_heads=2,
        kernel_size=3 if args.quick else 7,
    )
    model.compile(
        optimizer=keras.optimizers.SGD(0.05, momentum=0.9, nesterov=True),
        loss="sparse_categorical_crossentropy",  # The builder ends in a softmax.
        metrics=["accuracy"],
        jit_compile=not args.quick,  # XLA compiling: a fixed cost a smoke test can skip.
    )
    # Makes the optimizer's variables now: Keras would make them inside the first traced
    # training step, which TensorFlow then traces a second time (a deep model's first
    # epoch starts sooner).
    model.optimizer.build(model.trainable_variables)
    model.fit(train, epochs=epochs, verbose=2)
    loss, accuracy = model.evaluate(test, verbose=0)
    print(f"test accuracy {accuracy:.4f} on {info.num_eval_examples} images, loss {loss:.4f}")


if __name__ == "__main__":
    main()
