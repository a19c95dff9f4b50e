"""Which data sets can be used, and what they are: names, TFDS builders and their facts.

Any image classification data set of TensorFlow Datasets works (a TFDS name, optionally
with a config and version: "cifar10", "imagenette/320px-v2", "mnist:3.*"), plus "digits",
scikit-learn's 8x8 digits served by the `sasa_digits` builder of this package, and folders of
images with one subfolder per class (`keras_sasa.data.folder`).
"""

import dataclasses
import difflib
from typing import Mapping, Optional, Tuple

import tensorflow_datasets as tfds

from keras_sasa.data import digits as _digits  # noqa: F401  (registers "sasa_digits")
from keras_sasa.data import folder

DIGITS = "digits"
_ALIASES = {DIGITS: "sasa_digits"}

# Mirroring changes the class of a handwritten character (a flipped "2" is no "2"), so
# these data sets are never flipped. Every other data set is taken to be photographs or
# objects whose label survives a left-right flip (fashion_mnist included).
_NO_FLIP = frozenset(
    {
        "sasa_digits",
        "mnist",
        "binarized_mnist",
        "mnist_corrupted",
        "emnist",
        "kmnist",
        "svhn_cropped",
        "omniglot",
        "binary_alpha_digits",
        "cmaterdb",
    }
)

# Data sets whose "test" split is missing or unlabelled: evaluate on "validation".
_VALIDATION_IS_EVAL = frozenset(
    {
        "imagenet2012",
        "imagenet2012_subset",
        "imagenette",
        "imagewang",
        "imagenet_resized",
        "downsampled_imagenet",
    }
)


@dataclasses.dataclass(frozen=True)
class ImageDatasetInfo:
    """What a training script needs to know about an image classification data set.

    Attributes:
        name: the name that was asked for ("digits", "cifar10", ...).
        tfds_name: the TFDS builder behind it, with its config ("sasa_digits",
            "imagenette/full-size-v2").
        image_shape: `(height, width, channels)` as stored; height and width are None
            when the images vary in size (ImageNet, Imagenette).
        num_classes: number of classes.
        class_names: the class names, in label order.
        splits: number of examples per split. Empty until the data set is prepared
            (downloaded and converted by TFDS), because TFDS only counts them then.
        train_split: the split to train on ("train").
        eval_split: the labelled split to evaluate on: "test", or "validation" where
            there is no labelled test split (ImageNet, Imagenette).
        flip: whether a horizontal flip keeps the label. False for digits and other
            handwritten characters.
    """

    name: str
    tfds_name: str
    image_shape: Tuple[Optional[int], Optional[int], int]
    num_classes: int
    class_names: Tuple[str, ...] = dataclasses.field(repr=False)
    splits: Mapping[str, int]
    train_split: str
    eval_split: str
    flip: bool

    @property
    def num_train_examples(self) -> Optional[int]:
        """Examples in `train_split`, or None while the data set is not prepared."""
        return self.splits.get(self.train_split)

    @property
    def num_eval_examples(self) -> Optional[int]:
        """Examples in `eval_split`, or None while the data set is not prepared."""
        return self.splits.get(self.eval_split)


def tfds_name(name: str) -> str:
    """The TFDS builder name behind `name` ("digits" -> "sasa_digits")."""
    return _ALIASES.get(name, name)


def _base_name(name: str) -> str:
    """ "imagenette/320px-v2:1.0.0" -> "imagenette"."""
    return name.split("/")[0].split(":")[0]


def known_names():
    """Every name `get_builder` accepts, short of configs and versions."""
    return sorted(set(tfds.list_builders(with_community_datasets=False)) | set(_ALIASES))


def get_builder(name: str, data_dir: Optional[str] = None) -> tfds.core.DatasetBuilder:
    """The TFDS builder of an image classification data set, checked to be one.

    Nothing is downloaded: builders know their features before they are prepared.

    Raises:
        ValueError: `name` is no data set (the message lists close names), or the data
            set has no image and class-label features.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(
            "Invalid value for argument `name`. Expected a data set name such as "
            f"'digits' or 'cifar10', or a folder of images. Received: name={name!r}"
        )
    if folder.is_folder_name(name):
        return folder.builder(name, data_dir)
    try:
        builder = tfds.builder(tfds_name(name), data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError:
        raise ValueError(_unknown_name_message(name)) from None
    image_key, label_key = image_and_label_keys(builder.info)
    if image_key is None:
        raise ValueError(
            f"Data set {name!r} is not an image classification data set: it needs an "
            "image feature and a class label feature (TFDS supervised keys "
            f"(image, label)), but its features are {builder.info.features}."
        )
    return builder


def _unknown_name_message(name: str) -> str:
    close = difflib.get_close_matches(_base_name(name), known_names(), n=5, cutoff=0.6)
    hint = f"Did you mean one of: {', '.join(close)}?" if close else "No close names."
    return (
        f"Unknown data set {name!r}. {hint} Use {DIGITS!r}, the name of a TensorFlow "
        "Datasets image classification data set (see `tfds.list_builders()`), or the path "
        "of a folder of images with one subfolder per class."
    )


def image_and_label_keys(info):
    """The names of the image and class label features, or (None, None) if there are none.

    The supervised keys when they name an `Image` and a `ClassLabel`, else the features
    "image" and "label".
    """
    features = info.features
    candidates = []
    if info.supervised_keys and len(info.supervised_keys) == 2:
        candidates.append(tuple(info.supervised_keys))
    candidates.append(("image", "label"))
    for image_key, label_key in candidates:
        if not (isinstance(image_key, str) and isinstance(label_key, str)):
            continue
        if image_key not in features or label_key not in features:
            continue
        if isinstance(features[image_key], tfds.features.Image) and isinstance(
            features[label_key], tfds.features.ClassLabel
        ):
            return image_key, label_key
    return None, None


def info_from_builder(name: str, builder) -> ImageDatasetInfo:
    """The `ImageDatasetInfo` of a builder returned by `get_builder`."""
    image_key, label_key = image_and_label_keys(builder.info)
    features = builder.info.features
    splits = {split: info.num_examples for split, info in builder.info.splits.items()}
    base = _base_name(builder.name)
    if base in _VALIDATION_IS_EVAL:
        eval_split = "validation"
    elif splits and "test" not in splits and "validation" in splits:
        eval_split = "validation"
    else:
        eval_split = "test"
    return ImageDatasetInfo(
        name=name,
        tfds_name=builder.info.full_name.rsplit("/", 1)[0],
        image_shape=tuple(features[image_key].shape),
        num_classes=features[label_key].num_classes,
        class_names=tuple(features[label_key].names),
        splits=splits,
        train_split="train",
        eval_split=eval_split,
        flip=base not in _NO_FLIP,
    )


def dataset_info(
    name: str, data_dir: Optional[str] = None, download: bool = False
) -> ImageDatasetInfo:
    """Facts about an image classification data set: classes, image shape, split sizes.

    Args:
        name: "digits" or a TFDS name ("cifar10", "imagenette/320px-v2", ...).
        data_dir: TFDS data directory; TFDS's default (`~/tensorflow_datasets`) if None.
        download: prepare the data set first (download and convert it, as
            `load_dataset` does), so that the split sizes are known.

    Returns:
        An `ImageDatasetInfo`.

    Raises:
        ValueError: unknown name, or not an image classification data set.
    """
    builder = get_builder(name, data_dir)
    if download:
        builder.download_and_prepare()
    return info_from_builder(name, builder)
