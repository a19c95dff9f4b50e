"""keras_sasa.data: the digits data set, the input pipelines and their errors.

Offline: the digits come from scikit-learn, other data sets from `tfds.testing.mock_data`
(random images with the real data set's features).
"""

import numpy as np
import pytest
import tensorflow_datasets as tfds
from sklearn.datasets import load_digits

from keras_sasa import data
from keras_sasa.data import digits as digits_module


@pytest.fixture(scope="module")
def digits_dir(tmp_path_factory):
    """A TFDS data directory with sasa_digits prepared in it."""
    data_dir = str(tmp_path_factory.mktemp("tfds"))
    tfds.builder("sasa_digits", data_dir=data_dir).download_and_prepare()
    return data_dir


def read_split(data_dir, split):
    """All (images, labels) of a prepared split, in stored order, as NumPy arrays."""
    dataset = tfds.builder("sasa_digits", data_dir=data_dir).as_dataset(
        split=split, as_supervised=True
    )
    images, labels = zip(*tfds.as_numpy(dataset))
    return np.stack(images), np.array(labels)


def crop_matches(original, augmented, padding, flips=(False, True)):
    """The (dy, dx, flipped) for which zero-pad + crop (+ flip) of original is augmented."""
    height, width = original.shape[:2]
    padded = np.pad(original, ((padding, padding), (padding, padding), (0, 0)))
    matches = []
    for flipped in flips:
        for dy in range(2 * padding + 1):
            for dx in range(2 * padding + 1):
                window = padded[dy : dy + height, dx : dx + width]
                if flipped:
                    window = window[:, ::-1]
                if np.array_equal(window, augmented):
                    matches.append((dy - padding, dx - padding, flipped))
    return matches


def unbatch(dataset):
    images, labels = zip(*dataset.as_numpy_iterator())
    return np.concatenate(images), np.concatenate(labels)


def scaled(images):
    return images.astype(np.float32) / np.float32(255)


# The digits data set.


def test_digits_splits_hold_each_of_the_1797_sklearn_digits_once(digits_dir):
    train_images, train_labels = read_split(digits_dir, "train")
    test_images, test_labels = read_split(digits_dir, "test")
    assert (len(train_labels), len(test_labels)) == (1437, 360)

    sklearn = load_digits()
    expected = sorted(
        (int(label), digits_module.to_uint8_image(pixels).tobytes())
        for pixels, label in zip(sklearn.data, sklearn.target)
    )
    stored = sorted(
        (int(label), image.tobytes())
        for image, label in zip(
            np.concatenate([train_images, test_images]),
            np.concatenate([train_labels, test_labels]),
        )
    )
    assert len(expected) == 1797
    assert stored == expected


def test_digits_test_split_is_the_seeded_stratified_split(digits_dir):
    sklearn = load_digits()
    train_index, test_index = digits_module.split_indices(sklearn.target)
    again_train, again_test = digits_module.split_indices(sklearn.target)
    np.testing.assert_array_equal(train_index, again_train)
    np.testing.assert_array_equal(test_index, again_test)
    assert not set(train_index) & set(test_index)

    test_images, test_labels = read_split(digits_dir, "test")
    expected = sorted(
        (int(sklearn.target[i]), digits_module.to_uint8_image(sklearn.data[i]).tobytes())
        for i in test_index
    )
    assert sorted(zip(test_labels.tolist(), (x.tobytes() for x in test_images))) == expected


def test_digits_class_shares_are_the_same_in_both_splits(digits_dir):
    _, train_labels = read_split(digits_dir, "train")
    _, test_labels = read_split(digits_dir, "test")
    full = np.bincount(load_digits().target, minlength=10)
    train = np.bincount(train_labels, minlength=10)
    test = np.bincount(test_labels, minlength=10)
    np.testing.assert_array_equal(train + test, full)
    # Stratified: each class has 20% of its examples in test, to within one example.
    assert np.max(np.abs(test - 0.2 * full)) <= 1.0
    assert np.max(np.abs(train / train.sum() - full / full.sum())) < 0.002


def test_digits_images_are_uint8_8x8x1_scaled_from_0_16_to_0_255(digits_dir):
    images, labels = read_split(digits_dir, "train")
    assert images.dtype == np.uint8
    assert images.shape == (1437, 8, 8, 1)
    assert (images.min(), images.max()) == (0, 255)
    # The 17 levels of sklearn's 0..16, each rescaled and rounded.
    assert set(np.unique(images)) <= {round(k * 255 / 16) for k in range(17)}
    assert sorted(set(labels.tolist())) == list(range(10))


def test_digits_info_gives_classes_shape_and_split_sizes(digits_dir):
    info = data.dataset_info("digits", data_dir=digits_dir)
    assert info.tfds_name == "sasa_digits"
    assert info.num_classes == 10
    assert info.image_shape == (8, 8, 1)
    assert (info.num_train_examples, info.num_eval_examples) == (1437, 360)
    assert info.eval_split == "test"
    assert info.flip is False


def test_info_of_unprepared_imagenet_needs_no_download(tmp_path):
    info = data.dataset_info("imagenet2012", data_dir=str(tmp_path))
    assert info.num_classes == 1000
    assert info.image_shape == (None, None, 3)
    assert info.eval_split == "validation"  # Its test split has no labels.
    assert info.num_train_examples is None
    assert info.flip is True


# Pipelines.


@pytest.mark.parametrize("name, shape", [("cifar10", (32, 32, 3)), ("mnist", (28, 28, 1))])
@pytest.mark.parametrize("training", [False, True])
def test_pipeline_batches_are_float_images_in_0_1_and_int32_labels(tmp_path, name, shape, training):
    with tfds.testing.mock_data(num_examples=20):
        dataset = data.load_dataset(
            name, "train", 8, data_dir=str(tmp_path), training=training, seed=0
        )
        batches = list(dataset.as_numpy_iterator())
    # Training drops the last, partial batch; evaluation keeps it.
    expected_sizes = [8, 8] if training else [8, 8, 4]
    assert [len(labels) for _, labels in batches] == expected_sizes
    for images, labels in batches:
        assert images.shape == (len(labels),) + shape
        assert images.dtype == np.float32 and labels.dtype == np.int32
        assert 0.0 <= images.min() and images.max() <= 1.0
        assert labels.min() >= 0 and labels.max() < 10


def test_evaluation_pipeline_returns_the_images_unchanged_in_order(tmp_path):
    with tfds.testing.mock_data(num_examples=12):
        raw = tfds.builder("cifar10", data_dir=str(tmp_path)).as_dataset(split="test")
        raw_images = np.stack([example["image"] for example in tfds.as_numpy(raw)])
        images, _ = unbatch(data.load_dataset("cifar10", "test", 5, data_dir=str(tmp_path)))
    np.testing.assert_array_equal(images, scaled(raw_images))


def test_cifar_training_pads_by_4_crops_and_flips_half_the_images(tmp_path):
    with tfds.testing.mock_data(num_examples=96):
        raw = tfds.builder("cifar10", data_dir=str(tmp_path)).as_dataset(split="train")
        raw_images = np.stack([example["image"] for example in tfds.as_numpy(raw)])
        # A buffer of one keeps the order, so each output can be matched to its input.
        images, _ = unbatch(
            data.load_dataset(
                "cifar10",
                "train",
                32,
                data_dir=str(tmp_path),
                training=True,
                seed=3,
                shuffle_buffer=1,
            )
        )
    matches = [crop_matches(o, a, 4) for o, a in zip(scaled(raw_images), images)]
    assert all(len(m) == 1 for m in matches)  # Random pixels: exactly one explanation.
    shifts = np.array([m[0][:2] for m in matches])
    flipped = np.array([m[0][2] for m in matches])
    assert np.abs(shifts).max() == 4
    assert np.mean(np.any(shifts != 0, axis=1)) > 0.7  # 1 - 1/81 expected.
    assert 0.3 < flipped.mean() < 0.7


def test_mnist_training_crops_but_never_flips(tmp_path):
    with tfds.testing.mock_data(num_examples=64):
        raw = tfds.builder("mnist", data_dir=str(tmp_path)).as_dataset(split="train")
        raw_images = np.stack([example["image"] for example in tfds.as_numpy(raw)])
        images, _ = unbatch(
            data.load_dataset(
                "mnist",
                "train",
                32,
                data_dir=str(tmp_path),
                training=True,
                seed=3,
                shuffle_buffer=1,
            )
        )
    matches = [crop_matches(o, a, 3) for o, a in zip(scaled(raw_images), images)]
    assert all(len(m) == 1 for m in matches)
    assert not any(m[0][2] for m in matches)
    assert np.mean([m[0][:2] != (0, 0) for m in matches]) > 0.7


def test_digits_are_shifted_by_at_most_one_pixel_and_never_flipped(digits_dir):
    def augmented(**options):
        batch = data.load_dataset(
            "digits",
            "train",
            100,
            data_dir=digits_dir,
            training=True,
            seed=5,
            shuffle_buffer=1,
            **options,
        )
        return unbatch(batch)[0]

    raw_images, _ = read_split(digits_dir, "train")
    images = augmented()
    originals = scaled(raw_images[: len(images)])
    unflipped = [crop_matches(o, a, 1, flips=(False,)) for o, a in zip(originals, images)]
    assert all(unflipped)  # Every image is a shifted original, none needs a flip.
    assert np.mean([(0, 0, False) not in m for m in unflipped]) > 0.5

    # Forcing flips shows the check above would see them: many digits then need one.
    forced = augmented(flip=True)
    unexplained = [not crop_matches(o, a, 1, flips=(False,)) for o, a in zip(originals, forced)]
    assert np.mean(unexplained) > 0.3


def test_same_seed_gives_same_batches_and_each_epoch_is_reshuffled(digits_dir):
    def pipeline(seed):
        return data.load_dataset(
            "digits", "train", 64, data_dir=digits_dir, training=True, seed=seed
        )

    first = pipeline(7)
    epoch_1, labels_1 = unbatch(first)
    epoch_2, labels_2 = unbatch(first)
    again_1, again_labels_1 = unbatch(pipeline(7))
    other_1, other_labels_1 = unbatch(pipeline(8))

    np.testing.assert_array_equal(again_1, epoch_1)
    np.testing.assert_array_equal(again_labels_1, labels_1)
    assert np.mean(labels_2 != labels_1) > 0.5
    assert np.mean(other_labels_1 != labels_1) > 0.5
    # One epoch is a permutation of 1408 = 22 x 64 of the 1437 training digits.
    assert len(labels_1) == 1408
    full = np.bincount(read_split(digits_dir, "train")[1], minlength=10)
    assert np.all(np.bincount(labels_1, minlength=10) <= full)


def test_image_size_resizes_small_images(digits_dir):
    for training in (False, True):
        images, _ = next(
            data.load_dataset(
                "digits",
                "test",
                16,
                data_dir=digits_dir,
                image_size=32,
                training=training,
                seed=0,
            ).as_numpy_iterator()
        )
        assert images.shape == (16, 32, 32, 1)
        assert 0.0 <= images.min() and images.max() <= 1.0


@pytest.mark.parametrize("image_size, expected", [(None, 224), (48, 48)])
def test_large_images_of_any_size_come_out_square(tmp_path, image_size, expected):
    with tfds.testing.mock_data(num_examples=6):
        for training in (False, True):
            images, labels = next(
                data.load_dataset(
                    "imagenette",
                    "train",
                    3,
                    data_dir=str(tmp_path),
                    image_size=image_size,
                    training=training,
                    seed=0,
                ).as_numpy_iterator()
            )
            assert images.shape == (3, expected, expected, 3)
            assert 0.0 <= images.min() and images.max() <= 1.0


# Errors.


def test_unknown_name_lists_close_names():
    with pytest.raises(ValueError, match="Unknown data set 'cifar_10'") as error:
        data.load_dataset("cifar_10", "train", 32)
    assert "cifar10" in str(error.value) and "cifar100" in str(error.value)
    with pytest.raises(ValueError, match="digits"):
        data.dataset_info("digit")


def test_dataset_without_image_and_label_is_rejected():
    with pytest.raises(ValueError, match="'glue' is not an image classification"):
        data.load_dataset("glue", "train", 32)


@pytest.mark.parametrize("batch_size", [0, -8, 2.5, True])
def test_batch_size_must_be_a_positive_integer(batch_size):
    with pytest.raises(ValueError, match=f"batch_size={batch_size!r}"):
        data.load_dataset("digits", "train", batch_size)


def test_epochs_by_number_depend_on_the_seed_and_the_epoch_alone(digits_dir):
    def epochs_from(initial_epoch, seed=7):
        dataset = data.load_dataset(
            "digits",
            "train[:256]",
            64,
            data_dir=digits_dir,
            training=True,
            seed=seed,
            initial_epoch=initial_epoch,
            epochs=3,
        )
        return [(x.numpy(), y.numpy()) for x, y in dataset]

    whole, resumed = epochs_from(0), epochs_from(2)
    assert (len(whole), len(resumed)) == (12, 4)  # 4 batches per epoch.
    for (x, y), (x_again, y_again) in zip(whole[8:], resumed):  # Epoch 2 both times.
        np.testing.assert_array_equal(x_again, x)
        np.testing.assert_array_equal(y_again, y)
    labels = [np.concatenate([y for _, y in whole[4 * e : 4 * e + 4]]) for e in range(3)]
    assert np.mean(labels[0] != labels[1]) > 0.5  # Each epoch is shuffled anew...
    assert sorted(labels[0]) == sorted(labels[1])  # ...over the same 256 digits.
    other = epochs_from(2, seed=8)
    assert np.mean(other[0][1] != resumed[0][1]) > 0.5


def test_epochs_by_number_need_a_training_pipeline_with_a_seed_and_a_valid_range():
    with pytest.raises(ValueError, match=r"initial_epoch=3, epochs=3"):
        data.load_dataset("digits", "train", 32, training=True, seed=0, initial_epoch=3, epochs=3)
    with pytest.raises(ValueError, match=r"training=True, seed=None"):
        data.load_dataset("digits", "train", 32, training=True, initial_epoch=0, epochs=3)
    with pytest.raises(TypeError, match=r"initial_epoch=1.5"):
        data.load_dataset("digits", "train", 32, training=True, seed=0, initial_epoch=1.5)
