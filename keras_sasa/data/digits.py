"""`sasa_digits`: the 1,797 8x8 handwritten digits of scikit-learn, as a TFDS dataset.

scikit-learn ships this data set (the test part of UCI "Optical Recognition of Handwritten
Digits") inside its package, so it can be prepared with no network in well under a second.
It is the project's default data set: small enough to train a SASA model on a laptop CPU,
real enough that accuracy means something.

Importing this module registers the builder with TFDS, so after `import keras_sasa.data`
both `tfds.builder("sasa_digits")` and `keras_sasa.data.load_dataset("digits", ...)` work.
"""

import numpy as np
import tensorflow_datasets as tfds

# A fixed, stratified 80/20 split: every class keeps its share in both splits, and the
# split never changes between versions of scikit-learn that ship the same data.
TEST_FRACTION = 0.2
SPLIT_SEED = 0

_SKLEARN_MAX_PIXEL = 16  # sklearn's digits count set bits in 4x4 blocks: 0..16.

_CITATION = """\
@misc{alpaydin1998optdigits,
  author = {Alpaydin, E. and Kaynak, C.},
  title = {Optical Recognition of Handwritten Digits},
  year = {1998},
  howpublished = {UCI Machine Learning Repository},
  doi = {10.24432/C50P49}
}
"""


def split_indices(labels, test_fraction=TEST_FRACTION, seed=SPLIT_SEED):
    """Indices of the train and test examples: a seeded split, stratified by label."""
    from sklearn.model_selection import train_test_split

    indices = np.arange(len(labels))
    train, test = train_test_split(
        indices, test_size=test_fraction, stratify=labels, random_state=seed
    )
    return np.sort(train), np.sort(test)


def to_uint8_image(pixels):
    """sklearn's 64 values in 0..16 as an (8, 8, 1) uint8 image in 0..255."""
    scaled = np.rint(np.asarray(pixels, np.float64) * (255.0 / _SKLEARN_MAX_PIXEL))
    return scaled.astype(np.uint8).reshape(8, 8, 1)


class SasaDigits(tfds.core.GeneratorBasedBuilder):
    """scikit-learn's 8x8 handwritten digits with a fixed stratified train/test split."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Stratified 80/20 split of sklearn.datasets.load_digits."}

    def _info(self):
        return self.dataset_info_from_configs(
            description=(
                "1,797 8x8 grey-scale handwritten digits (scikit-learn's copy of the UCI "
                "optdigits test set), pixels rescaled from 0..16 to 0..255, split 80/20 "
                f"stratified by class with seed {SPLIT_SEED}."
            ),
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Image(shape=(8, 8, 1)),
                    "label": tfds.features.ClassLabel(num_classes=10),
                }
            ),
            supervised_keys=("image", "label"),
            homepage="https://scikit-learn.org/stable/datasets/toy_dataset.html#digits-dataset",
            citation=_CITATION,
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # Nothing to download: the data is inside scikit-learn.
        from sklearn.datasets import load_digits

        digits = load_digits()
        train, test = split_indices(digits.target)
        return {
            "train": self._generate_examples(digits, train),
            "test": self._generate_examples(digits, test),
        }

    def _generate_examples(self, digits, indices):
        for index in indices:
            # The key is the index in sklearn's order, so an example can be traced back.
            yield (
                int(index),
                {
                    "image": to_uint8_image(digits.data[index]),
                    "label": int(digits.target[index]),
                },
            )
