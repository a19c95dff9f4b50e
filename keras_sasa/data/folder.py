"""A folder of images, one subfolder per class, as a TFDS data set.

The layout is that of `keras.utils.image_dataset_from_directory`:

    flowers/daisy/001.jpg, flowers/daisy/002.png, ..., flowers/tulip/...

or, with its own splits, that of tfds's `ImageFolder`:

    flowers/train/daisy/001.jpg, ..., flowers/test/daisy/..., (or validation/ for test/)

A folder without split subfolders gets a held-out "test" split: a fixed, seeded 20% of
each class (`TEST_FRACTION`, `SPLIT_SEED`), so the split is the same in every run. A folder
with one image per class has none to hold out, and is refused.

The folder is read once into TFDS's format (`SasaImageFolder`, in the TFDS data directory
under `sasa_image_folder/<folder name>_<digest>`; the digest covers the folder's path and
every image's name, size and modification time, so a changed folder is read again). After
that it is an ordinary TFDS data set: `load_dataset`, slices ("train[:80%]"), the train
and tune commands, resuming, all work as for "cifar10".

Images: PNG, JPEG, BMP and GIF (the first frame), as in Keras. They are grey-scale
(1 channel) when every image is, RGB otherwise (alpha dropped, palettes expanded, 16-bit
grey scaled to 8 bits). Of one size, that is the data set's image shape; of several, the
shape is (None, None, channels) and the pipelines crop and resize as for ImageNet. Every
image is decoded whole before the folder is read (`encoded_image`): a damaged file is
refused then, named, rather than in the middle of training.
"""

import contextlib
import dataclasses
import hashlib
import io
import logging
import os
import re
from typing import Dict, Optional, Tuple

import numpy as np
import tensorflow_datasets as tfds

TEST_FRACTION = 0.2
SPLIT_SEED = 0
IMAGE_EXTENSIONS = (".bmp", ".gif", ".jpeg", ".jpg", ".png")  # Keras's ALLOWLIST_FORMATS.
# Split subfolders (tfds ImageFolder's layout) and the split each one becomes.
SPLIT_FOLDERS = {"train": "train", "test": "test", "validation": "validation", "val": "validation"}
_GREY_MODES = frozenset({"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F"})
_FORMAT_VERSION = "2"  # Part of the digest: changing how folders are read reads them again.
_SHAPES = {}  # digest -> image shape, of the folders scanned in this process.


class ImageFolderError(ValueError):
    """A folder that cannot be used as an image data set; the message names it."""


@dataclasses.dataclass(frozen=True)
class FolderManifest:
    """What was found in a folder: classes, the images of each split, their shape."""

    path: str
    class_names: Tuple[str, ...]
    splits: Dict[str, Tuple[Tuple[str, int], ...]]  # split -> ((file, label), ...)
    image_shape: Tuple[Optional[int], Optional[int], int]
    digest: str

    @property
    def config_name(self):
        base = re.sub(r"[^A-Za-z0-9]+", "_", os.path.basename(self.path)).strip("_") or "folder"
        return f"{base.lower()[:40]}_{self.digest}"


def is_folder_name(name) -> bool:
    """Whether `--dataset name` means a folder: an existing directory, or a name written
    as a path ("/...", "./...", "../...", "~/..."), so that a missing one is reported as
    a missing folder rather than an unknown TFDS name."""
    if not isinstance(name, str) or not name:
        return False
    if name.startswith(("/", "./", "../", "~", ".\\", "..\\")) or os.path.isabs(name):
        return True
    return os.path.isdir(name)


def builder(name: str, data_dir: Optional[str] = None) -> "SasaImageFolder":
    """The TFDS builder of the image folder `name` (read, not yet prepared)."""
    return SasaImageFolder(manifest=scan(name), data_dir=data_dir)


def scan(folder: str) -> FolderManifest:
    """Finds the classes, images and splits of `folder` and reads each image's header.

    Raises:
        ImageFolderError: the folder is missing or not a folder, holds fewer than two
            class subfolders, a class without images, a file that is no image, or no
            test images (one image per class; an empty split subfolder).
    """
    path = os.path.abspath(os.path.expanduser(folder))
    if not os.path.exists(path):
        raise ImageFolderError(f"No such image folder: {folder!r}.")
    if not os.path.isdir(path):
        raise ImageFolderError(f"{folder!r} is a file; expected a folder of class subfolders.")
    subfolders = _subfolders(path)
    split_names = {SPLIT_FOLDERS.get(s) for s in subfolders}
    if "train" in split_names and None not in split_names and len(subfolders) > 1:
        class_names = tuple(_subfolders(os.path.join(path, "train")))
        _check_classes(os.path.join(path, "train"), class_names)
        labels = {c: i for i, c in enumerate(class_names)}
        files = {}
        for sub in subfolders:
            split_path = os.path.join(path, sub)
            extra = sorted(set(_subfolders(split_path)) - set(class_names))
            if extra:
                raise ImageFolderError(
                    f"{split_path!r} has classes that {os.path.join(path, 'train')!r} lacks: "
                    f"{', '.join(extra)}."
                )
            files[SPLIT_FOLDERS[sub]] = _class_images(split_path, _subfolders(split_path), labels)
            if not files[SPLIT_FOLDERS[sub]]:
                raise ImageFolderError(
                    f"The split folder {split_path!r} has no class subfolders of images."
                )
    else:
        class_names = tuple(subfolders)
        _check_classes(path, class_names)
        labels = {c: i for i, c in enumerate(class_names)}
        files = held_out_split(_class_images(path, class_names, labels))
        if not files["test"]:
            raise ImageFolderError(
                f"The image folder {path!r} has one image per class, too few to hold out "
                f"test images ({TEST_FRACTION:.0%} of each class of two or more): put two or "
                "more images in a class, or the images to test on in a test/ subfolder "
                "beside a train/ subfolder."
            )
    stats = [(f, _stat(f)) for split in files.values() for f, _ in split]
    digest = hashlib.sha256(
        repr(
            (
                _FORMAT_VERSION,
                path,
                TEST_FRACTION,
                SPLIT_SEED,
                class_names,
                sorted(files),
                [(f, s.st_size, s.st_mtime_ns) for f, s in stats],
            )
        ).encode()
    ).hexdigest()[:12]
    if digest not in _SHAPES:  # A run builds the data set several times: read headers once.
        _SHAPES[digest] = _image_shape([f for f, _ in stats])
    return FolderManifest(
        path=path,
        class_names=class_names,
        splits={split: tuple(items) for split, items in files.items()},
        image_shape=_SHAPES[digest],
        digest=digest,
    )


def held_out_split(images, test_fraction=TEST_FRACTION, seed=SPLIT_SEED):
    """`{"train": ..., "test": ...}` of `(file, label)` pairs: `test_fraction` of each
    class (rounded; at least one image of a class of two or more, and never all of it),
    chosen by a generator seeded with `seed` and the label, in sorted file order."""
    by_label = {}
    for file, label in sorted(images):
        by_label.setdefault(label, []).append(file)
    train, test = [], []
    for label, files in sorted(by_label.items()):
        count = len(files)
        num_test = min(max(int(round(count * test_fraction)), 1), count - 1) if count > 1 else 0
        order = np.random.default_rng([seed, label]).permutation(count)
        chosen = set(order[:num_test].tolist())
        for index, file in enumerate(files):
            (test if index in chosen else train).append((file, label))
    return {"train": train, "test": test}


def _subfolders(path):
    return sorted(
        entry.name
        for entry in os.scandir(path)
        if entry.is_dir() and not entry.name.startswith(".")
    )


def _check_classes(path, class_names):
    if not class_names:
        raise ImageFolderError(
            f"The image folder {path!r} has no class subfolders: put each class's images in "
            "a subfolder named after the class (flowers/daisy/1.jpg, flowers/tulip/2.jpg)."
        )
    if len(class_names) == 1:
        raise ImageFolderError(
            f"The image folder {path!r} has one class subfolder ({class_names[0]!r}); a "
            "classifier needs two or more."
        )


def _class_images(path, class_names, labels):
    images = []
    for name in class_names:
        found = []
        for directory, subdirs, files in os.walk(os.path.join(path, name), followlinks=True):
            subdirs[:] = sorted(d for d in subdirs if not d.startswith("."))
            found.extend(
                os.path.join(directory, f)
                for f in sorted(files)
                if f.lower().endswith(IMAGE_EXTENSIONS) and not f.startswith(".")
            )
        if not found:
            raise ImageFolderError(
                f"The class folder {os.path.join(path, name)!r} has no images "
                f"({', '.join(IMAGE_EXTENSIONS)})."
            )
        images.extend((file, labels[name]) for file in found)
    return images


def _stat(file):
    try:
        return os.stat(file)
    except OSError as error:  # A link to nowhere, a file removed since it was listed.
        raise ImageFolderError(f"Cannot read the image {file!r}: {error.strerror}.") from None


def _open(file):
    from PIL import Image

    try:
        return Image.open(file)
    except (OSError, ValueError, Image.DecompressionBombError) as error:
        raise ImageFolderError(f"Cannot read the image {file!r}: {error}") from None


def _image_shape(files):
    """(height, width, channels) shared by all images, with None where they differ."""
    sizes, grey = set(), True
    for file in files:
        with _open(file) as image:
            sizes.add(image.size)
            grey = grey and image.mode in _GREY_MODES
    (width, height), *others = sorted(sizes)
    if others:
        width = height = None
    return (height, width, 1 if grey else 3)


def encoded_image(file, channels):
    """The bytes TFDS stores for `file`: PNG, and grey or RGB JPEG, as they are (TFDS
    decodes them to `channels`), other images as PNG. The whole image is decoded now, by
    PIL and by TensorFlow's decoder that reads it in training (it is stricter: it refuses
    a PNG whose check sums fail), so that a damaged file is found now, named, and not in
    the middle of training."""
    with _open(file) as image:
        try:
            image.load()
        except (OSError, ValueError, SyntaxError) as error:
            raise ImageFolderError(f"Cannot read the image {file!r}: {error}") from None
        if image.format == "PNG" or (image.format == "JPEG" and image.mode in ("L", "RGB")):
            with open(file, "rb") as stream:
                encoded = stream.read()
            _check_tensorflow_decodes(file, encoded, channels)
            return encoded
        converted = image.convert("L" if channels == 1 else "RGB")
    buffer = io.BytesIO()
    converted.save(buffer, format="PNG")
    return buffer.getvalue()


def _check_tensorflow_decodes(file, encoded, channels):
    import tensorflow as tf

    try:
        tf.io.decode_image(encoded, channels=channels, expand_animations=False)
    except tf.errors.InvalidArgumentError as error:
        # "{{function_node ...}} Invalid PNG data, size 3519 [Op:DecodeImage] name: "
        reason = re.sub(r"\{\{.*?\}\}|\[Op:.*", "", error.message, flags=re.S).strip()
        raise ImageFolderError(
            f"Cannot read the image {file!r}: TensorFlow's decoder refuses it ({reason})."
        ) from None


class _DropCustomConfigWarning(logging.Filter):
    def filter(self, record):
        return not str(record.msg).startswith("Using custom data configuration")


@contextlib.contextmanager
def _without_custom_config_warning():
    """TFDS warns, on every builder made, that a config is not one of the class's: every
    folder has its own config here, so the warning says nothing."""
    logger, quiet = logging.getLogger("absl"), _DropCustomConfigWarning()
    logger.addFilter(quiet)
    try:
        yield
    finally:
        logger.removeFilter(quiet)


class SasaImageFolder(tfds.core.GeneratorBasedBuilder):
    """A folder of class subfolders of images (see the module docstring)."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Class subfolders; a seeded 20% per class held out as test."}

    def __init__(self, *, manifest: FolderManifest, **kwargs):
        self._manifest = manifest
        config = tfds.core.BuilderConfig(name=manifest.config_name, description=manifest.path)
        with _without_custom_config_warning():
            super().__init__(config=config, **kwargs)

    def download_and_prepare(self, *args, **kwargs):
        """Checks that every image decodes, then reads the folder into TFDS's format
        (once: a prepared folder is not read again)."""
        # (`is_prepared()` would log a warning about the folder not existing yet.)
        if not (self.data_path / "dataset_info.json").exists():
            channels = self._manifest.image_shape[2]
            for split in self._manifest.splits.values():
                for file, _ in split:
                    encoded_image(file, channels)
        return super().download_and_prepare(*args, **kwargs)

    def _info(self):
        manifest = self._manifest
        return self.dataset_info_from_configs(
            description=f"The images of {manifest.path}, one subfolder per class.",
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Image(shape=manifest.image_shape),
                    "label": tfds.features.ClassLabel(names=list(manifest.class_names)),
                }
            ),
            supervised_keys=("image", "label"),
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # Nothing to download.
        return {
            split: self._generate_examples(items) for split, items in self._manifest.splits.items()
        }

    def _generate_examples(self, items):
        channels = self._manifest.image_shape[2]
        for file, label in items:
            key = os.path.relpath(file, self._manifest.path)
            yield key, {"image": encoded_image(file, channels), "label": label}
