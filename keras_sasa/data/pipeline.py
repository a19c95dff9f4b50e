"""`load_dataset`: a batched tf.data pipeline of (image, label) for training or evaluation.

The pipeline, in order: read the TFDS split, keep (image, int32 label), cache the decoded
images in memory when they fit, shuffle (training), augment (training) or resize
(evaluation), batch, scale to float32 in [0, 1], prefetch. See `keras_sasa.data.augment`
for the crops.
"""

import numbers
from typing import Optional

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from keras_sasa import _validation as check
from keras_sasa.data import augment
from keras_sasa.data import catalog

# Decoded images are cached in memory when they take at most this much (CIFAR-10: 150 MiB;
# ImageNet, 150 GB decoded, is read from its files every epoch instead).
CACHE_LIMIT_BYTES = 1 << 30
MAX_DEFAULT_SHUFFLE_BUFFER = 10_000
# Under a multi-worker strategy, workers split a split's files between them when it has
# at least this many (ImageNet's training split has 1,024); smaller splits are read whole
# by every worker, which keeps every `index % num_workers`-th example. With fewer files
# than workers, tf.data's default file-based sharding fails.
MIN_FILES_TO_SHARD_BY_FILE = 32


def load_dataset(
    name: str,
    split: str,
    batch_size: int,
    *,
    data_dir: Optional[str] = None,
    image_size: Optional[int] = None,
    training: bool = False,
    seed: Optional[int] = None,
    shuffle_buffer: Optional[int] = None,
    flip: Optional[bool] = None,
    cache: Optional[bool] = None,
    drop_remainder: Optional[bool] = None,
    download: bool = True,
    initial_epoch: Optional[int] = None,
    epochs: Optional[int] = None,
) -> tf.data.Dataset:
    """A batched `(images, labels)` dataset of an image classification data set.

    Training pipelines shuffle and augment; evaluation pipelines only resize:

    - small images (sides <= 64: digits, MNIST, CIFAR): training zero-pads by an eighth
      of the side and crops a random window of the original size (CIFAR's recipe);
    - large images (ImageNet, Imagenette): training takes an Inception crop (random
      8%..100% of the area, aspect ratio 3/4..4/3) resized to `image_size`; evaluation
      resizes the shorter side to `image_size / 0.875` and crops the central square;
    - training flips images left-right at random, except for data sets whose labels a
      mirror changes (digits, MNIST, EMNIST, SVHN, ...; see `ImageDatasetInfo.flip`).

    With a `seed`, the pipeline is reproducible: building it again with the same seed
    gives the same batches, epoch after epoch, and each epoch is shuffled and augmented
    differently.

    With an `initial_epoch` and `epochs` as well (training only), the dataset holds the
    batches of epoch `initial_epoch`, then of the next epoch, up to epoch `epochs - 1`
    (give `Model.fit` its `steps_per_epoch`). Each epoch's order and augmentation are a
    function of the seed and the epoch number alone, so a run resumed at epoch e reads
    the batches the uninterrupted run read at epoch e. (Without them, each pass over the
    dataset is reshuffled from a state that starts again at epoch 0 in a new process.)

    Under a `tf.distribute` strategy, batch with the global batch size
    (`keras_sasa.distribute.global_batch_size`): Keras splits each batch over replicas.
    With several workers, each worker builds the same pipeline and keeps its share: its
    own files of splits with at least 32 files (ImageNet), else every `num_workers`-th
    example. Pass the same `seed` to every worker when training, or they would shuffle
    differently and share out overlapping examples.

    The data set is prepared (downloaded and converted by TFDS) on first use unless
    `download=False`. ImageNet (`imagenet2012`) cannot be downloaded automatically: put
    its tar files in `<data_dir>/downloads/manual/` first, as TFDS explains.

    Args:
        name: "digits" (scikit-learn's 8x8 digits, no download) or the name of a TFDS
            image classification data set ("mnist", "cifar10", "imagenette/320px-v2",
            "imagenet2012", ...).
        split: a TFDS split, including slices: "train", "test", "train[:90%]".
            `dataset_info(name).eval_split` names the split to evaluate on.
        batch_size: examples per batch (the global batch size under a strategy).
        data_dir: TFDS data directory; TFDS's default (`~/tensorflow_datasets`) if None.
        image_size: side of the square output images. Small images are resized to it
            (bilinear); large images are cropped to it. Defaults to the native size for
            small images and 224 for large ones of varying size.
        training: shuffle and augment (True), or read in order without augmentation.
        seed: seed of the file order, shuffling and augmentation. None: not reproducible.
        shuffle_buffer: examples in the shuffle buffer. Defaults to the whole split, up to
            10,000 examples.
        flip: random horizontal flips when training. None: the data set's default
            (`ImageDatasetInfo.flip`).
        cache: keep the decoded images in memory after the first epoch. None: when they
            take at most 1 GiB.
        drop_remainder: drop the last, partial batch. Defaults to `training` (TPUs and
            exact replica splits need full batches).
        download: prepare the data set if it is not yet prepared.
        initial_epoch, epochs: with `training` and a `seed`, the first epoch and the
            number of epochs of a run: the dataset holds epochs `initial_epoch` ..
            `epochs - 1`, each a function of (seed, epoch) only (see above).

    Returns:
        A `tf.data.Dataset` of `(images, labels)`: float32 images of shape
        `(batch, height, width, channels)` in [0, 1], and int32 labels of shape `(batch,)`.

    Raises:
        ValueError: an unknown data set name (with close names), a data set that is not
            image classification, or a non-positive `batch_size`, `image_size` or
            `shuffle_buffer`.
    """
    check.positive_int("batch_size", batch_size, type_error=ValueError)
    for argument, value in (("image_size", image_size), ("shuffle_buffer", shuffle_buffer)):
        if value is not None:
            check.positive_int(argument, value, type_error=ValueError)
    if initial_epoch is not None:
        check.integer("initial_epoch", initial_epoch)
        if not isinstance(epochs, numbers.Integral) or not 0 <= initial_epoch < epochs:
            raise ValueError(
                "Invalid value for argument `initial_epoch`: expected 0 <= initial_epoch < "
                f"epochs. Received: initial_epoch={initial_epoch}, epochs={epochs!r}"
            )
        if not training or seed is None:
            raise ValueError(
                "Invalid value for argument `initial_epoch`: only a training pipeline with a "
                f"seed reads epochs by number. Received: training={training}, seed={seed}"
            )

    builder = catalog.get_builder(name, data_dir)
    if download:
        builder.download_and_prepare()
    info = catalog.info_from_builder(name, builder)
    image_key, label_key = catalog.image_and_label_keys(builder.info)
    flip = info.flip if flip is None else bool(flip)
    drop_remainder = training if drop_remainder is None else bool(drop_remainder)

    dataset = builder.as_dataset(
        split=split,
        shuffle_files=training,
        read_config=tfds.ReadConfig(shuffle_seed=seed, try_autocache=False),
    )
    dataset = dataset.with_options(_sharding_options(builder, split))
    dataset = dataset.map(
        lambda example: (example[image_key], tf.cast(example[label_key], tf.int32)),
        num_parallel_calls=tf.data.AUTOTUNE,
    )
    num_examples = int(dataset.cardinality())
    if cache if cache is not None else _fits_in_memory(num_examples, info.image_shape):
        dataset = dataset.cache()

    view = _image_view(info.image_shape, image_size, training=training, flip=flip)
    if training:
        if shuffle_buffer is None:
            shuffle_buffer = MAX_DEFAULT_SHUFFLE_BUFFER
            if num_examples > 0:
                shuffle_buffer = min(num_examples, shuffle_buffer)
    if initial_epoch is not None:
        batches = _epochs_from(
            dataset, initial_epoch, epochs, seed, view, shuffle_buffer, batch_size, drop_remainder
        )
        return batches.with_options(_sharding_options(builder, split)).prefetch(tf.data.AUTOTUNE)
    if training:
        dataset = dataset.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
        # One seed pair per image, fresh each epoch and reproducible for a given seed.
        seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)
        seeds = seeds.batch(2, drop_remainder=True)
        dataset = tf.data.Dataset.zip(dataset, seeds).map(
            lambda example, seed_pair: (view(example[0], seed_pair), example[1]),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
    elif view is not None:
        dataset = dataset.map(
            lambda image, label: (view(image, None), label),
            num_parallel_calls=tf.data.AUTOTUNE,
        )

    dataset = dataset.batch(
        batch_size, drop_remainder=drop_remainder, num_parallel_calls=tf.data.AUTOTUNE
    )
    dataset = dataset.map(
        lambda images, labels: (tf.cast(images, tf.float32) / 255.0, labels),
        num_parallel_calls=tf.data.AUTOTUNE,
    )
    return dataset.prefetch(tf.data.AUTOTUNE)


def _scale(images, labels):
    return tf.cast(images, tf.float32) / 255.0, labels


def _epochs_from(
    dataset, initial_epoch, epochs, seed, view, shuffle_buffer, batch_size, drop_remainder
):
    """Epochs `initial_epoch` .. `epochs - 1` of `dataset`, batched, one after the other;
    each shuffled and augmented with seeds made of (seed, epoch) and the image's place.

    The epochs are separate datasets with Python seeds: a seed tensor (one epoch number
    per element of a `Dataset.range`) fails in `shuffle` when the global seed is 0.
    """

    def epoch_batches(epoch):
        epoch_seed = seed * 1_000_003 + epoch
        shuffled = dataset.shuffle(shuffle_buffer, seed=epoch_seed, reshuffle_each_iteration=False)
        # The image's augmentation seed pair: (epoch seed, place in the epoch).
        pair = tf.constant(epoch_seed, tf.int64)
        augmented = shuffled.enumerate().map(
            lambda index, example: (view(example[0], tf.stack([pair, index])), example[1]),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
        batches = augmented.batch(
            batch_size, drop_remainder=drop_remainder, num_parallel_calls=tf.data.AUTOTUNE
        )
        return batches.map(_scale, num_parallel_calls=tf.data.AUTOTUNE)

    per_epoch = [epoch_batches(epoch) for epoch in range(initial_epoch, epochs)]
    if len(per_epoch) == 1:
        return per_epoch[0]
    steps = int(per_epoch[0].cardinality())
    if steps < 0:
        raise ValueError("Cannot count the batches of an epoch, to read one epoch after another.")
    # All of epoch i's batches, then epoch i + 1's: choose_from_datasets reads the epochs
    # in turn from a flat list (chained concatenates would nest `epochs` deep).
    order = tf.data.Dataset.range(len(per_epoch)).flat_map(
        lambda i: tf.data.Dataset.from_tensors(i).repeat(steps)
    )
    return tf.data.Dataset.choose_from_datasets(per_epoch, order)


def _image_view(image_shape, image_size, *, training, flip):
    """The per-image function `(image, seed_pair) -> image`, or None for the identity."""
    height, width, _ = image_shape
    small = (
        height is not None
        and width is not None
        and max(height, width) <= augment.SMALL_IMAGE_MAX_SIDE
    )
    if small:
        return _small_image_view(image_size, training=training, flip=flip)
    if image_size is None:
        image_size = height if height is not None and height == width else None
    return _large_image_view(
        image_size or augment.DEFAULT_LARGE_IMAGE_SIZE, training=training, flip=flip
    )


def _small_image_view(image_size, *, training, flip):
    def resize(image):
        if image_size is None:
            return image
        return tf.image.resize(image, (image_size, image_size), antialias=True)

    if not training:
        return None if image_size is None else (lambda image, seed_pair: resize(image))

    def view(image, seed_pair):
        crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed_pair, 2))
        image = resize(image)
        padding = augment.crop_padding(min(image.shape[0], image.shape[1]))
        image = augment.pad_and_random_crop(image, crop_seed, padding)
        return augment.random_flip(image, flip_seed) if flip else image

    return view


def _large_image_view(image_size, *, training, flip):
    if not training:
        return lambda image, seed_pair: augment.resize_and_center_crop(image, image_size)

    def view(image, seed_pair):
        crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed_pair, 2))
        image = augment.random_resized_crop(image, crop_seed, image_size)
        return augment.random_flip(image, flip_seed) if flip else image

    return view


def _sharding_options(builder, split):
    try:
        num_files = len(builder.info.splits[split].file_instructions)
    except (KeyError, ValueError, AssertionError):  # Split sizes unknown.
        num_files = 0
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = (
        tf.data.experimental.AutoShardPolicy.AUTO
        if num_files >= MIN_FILES_TO_SHARD_BY_FILE
        else tf.data.experimental.AutoShardPolicy.DATA
    )
    return options


def _fits_in_memory(num_examples, image_shape):
    if num_examples < 0 or None in image_shape:
        return False
    return num_examples * int(np.prod(image_shape)) <= CACHE_LIMIT_BYTES
