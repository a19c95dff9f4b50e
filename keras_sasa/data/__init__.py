"""Data sets and tf.data input pipelines for training SASA models.

`load_dataset` gives batched `(images, labels)` pipelines of "digits" (scikit-learn's 8x8
digits, prepared offline) or any TFDS image classification data set; `dataset_info` says
how many classes, which image shape and how many examples a data set has.
"""

from keras_sasa.data.catalog import DIGITS
from keras_sasa.data.catalog import ImageDatasetInfo
from keras_sasa.data.catalog import dataset_info
from keras_sasa.data.digits import SasaDigits
from keras_sasa.data.pipeline import load_dataset

__all__ = ["DIGITS", "ImageDatasetInfo", "SasaDigits", "dataset_info", "load_dataset"]
