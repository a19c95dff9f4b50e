"""Per-image augmentation for tf.data: the standard ResNet recipes, made reproducible.

Small images (CIFAR, MNIST, digits) get the CIFAR recipe: zero-pad by an eighth of the
side, random crop back to size. Large images (ImageNet) get the Inception crop used to
train ResNets (and the paper's models): a random box of 8%..100% of the area and aspect
ratio 3/4..4/3, resized; evaluation resizes the shorter side to size / 0.875 and takes
the central square.

Every random op is a `tf.image.stateless_*` op fed an explicit seed pair, so a pipeline
built with the same seed yields the same images (Keras' random preprocessing layers draw
from a stateful generator and give no such guarantee inside tf.data).
"""

import tensorflow as tf

# Images up to this side length are "small": padded and cropped, never resized by a crop.
SMALL_IMAGE_MAX_SIDE = 64
# Side of the crops of large images when no image size is asked for (ImageNet's 224).
DEFAULT_LARGE_IMAGE_SIZE = 224
# The Inception crop's ranges, and the share of the resized image kept for evaluation.
CROP_AREA_RANGE = (0.08, 1.0)
CROP_ASPECT_RATIO_RANGE = (3.0 / 4.0, 4.0 / 3.0)
EVAL_CROP_FRACTION = 0.875


def crop_padding(size):
    """Zero padding of the random crop of a small image: an eighth of its side, >= 1.

    4 pixels for CIFAR's 32 (the usual recipe), 3 for MNIST's 28, 1 for the 8x8 digits.
    """
    return max(1, int(size) // 8)


def pad_and_random_crop(image, seed, padding):
    """Zero-pad every side by `padding` and crop a random window of the original size."""
    shape = tf.shape(image)
    padded = tf.pad(image, [[padding, padding], [padding, padding], [0, 0]])
    return tf.image.stateless_random_crop(padded, shape, seed=seed)


def random_resized_crop(image, seed, size):
    """Inception crop: a random box of the image, resized to `size` x `size` (float32)."""
    begin, crop_size, _ = tf.image.stateless_sample_distorted_bounding_box(
        tf.shape(image),
        bounding_boxes=tf.constant([[[0.0, 0.0, 1.0, 1.0]]]),
        seed=seed,
        min_object_covered=0.0,
        aspect_ratio_range=CROP_ASPECT_RATIO_RANGE,
        area_range=CROP_AREA_RANGE,
        max_attempts=10,
        use_image_if_no_bounding_boxes=True,
    )
    crop = tf.slice(image, begin, crop_size)
    # A slice by a computed size knows none of its dimensions: keep the channel count,
    # which the model's first layer needs (images of several sizes have only that one).
    crop.set_shape([None, None, image.shape[-1]])
    return tf.image.resize(crop, (size, size), antialias=True)


def resize_and_center_crop(image, size):
    """Evaluation view of a large image: shorter side to size / 0.875, central square."""
    shape = tf.cast(tf.shape(image)[:2], tf.float32)
    scale = (size / EVAL_CROP_FRACTION) / tf.reduce_min(shape)
    resized_shape = tf.cast(tf.math.ceil(shape * scale), tf.int32)
    resized = tf.image.resize(image, resized_shape, antialias=True)
    return tf.image.resize_with_crop_or_pad(resized, size, size)


def random_flip(image, seed):
    """Mirror left-right with probability 1/2."""
    return tf.image.stateless_random_flip_left_right(image, seed=seed)
