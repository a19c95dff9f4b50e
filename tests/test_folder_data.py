"""Folders of images (one subfolder per class) as data sets: `keras_sasa.data.folder`."""

import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from keras_sasa import data
from keras_sasa import training
from keras_sasa.data import folder

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLASSES = ("zero", "one", "two")  # Labels follow the sorted names: one=0, two=1, zero=2.
PER_CLASS = 10


def digit_images():
    """The first PER_CLASS 8x8 digits of 0, 1 and 2, as uint8 arrays in 0..255."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = np.rint(digits.images * (255 / 16)).astype(np.uint8)
    return {name: images[digits.target == digit][:PER_CLASS] for digit, name in enumerate(CLASSES)}


def write_folder(root, images_by_class):
    for name, images in images_by_class.items():
        os.makedirs(root / name, exist_ok=True)
        for index, image in enumerate(images):
            Image.fromarray(image).save(root / name / f"{index:02d}.png")
    return str(root)


@pytest.fixture(scope="module")
def digit_folder(tmp_path_factory):
    """(folder of 3 x 10 grey 8x8 PNGs, a TFDS data directory, the images by class)."""
    images = digit_images()
    root = write_folder(tmp_path_factory.mktemp("images") / "digits", images)
    return root, str(tmp_path_factory.mktemp("tfds")), images


def test_classes_are_the_sorted_subfolders_and_the_shape_is_the_images(digit_folder):
    root, _, _ = digit_folder
    manifest = folder.scan(root)
    assert manifest.class_names == ("one", "two", "zero")
    assert manifest.image_shape == (8, 8, 1)
    assert {split: len(items) for split, items in manifest.splits.items()} == {
        "train": 24,
        "test": 6,
    }


def test_held_out_split_is_a_seeded_fifth_of_each_class_whatever_the_file_order():
    images = [(f"c{label}/{i}.png", label) for label, count in ((0, 10), (1, 7), (2, 1))
              for i in range(count)]  # fmt: skip
    split = folder.held_out_split(images)
    assert folder.held_out_split(images[::-1]) == split
    test_labels = [label for _, label in split["test"]]
    # round(0.2 * 10) = 2, round(0.2 * 7) = 1, and a class of one image stays in train.
    assert test_labels == [0, 0, 1]
    assert sorted(split["train"] + split["test"]) == sorted(images)
    assert folder.held_out_split(images, seed=1)["test"] != split["test"]


def test_the_pipelines_give_the_folders_pixels_and_labels(digit_folder):
    root, data_dir, images = digit_folder
    info = data.dataset_info(root, data_dir=data_dir, download=True)
    assert (info.num_classes, info.class_names) == (3, ("one", "two", "zero"))
    assert info.image_shape == (8, 8, 1)
    assert (info.splits, info.eval_split) == ({"train": 24, "test": 6}, "test")
    read = []
    for split in ("train", "test"):
        for batch, labels in data.load_dataset(root, split, 64, data_dir=data_dir):
            pixels = np.rint(batch.numpy() * 255).astype(np.uint8)
            read += list(zip(pixels, labels.numpy().tolist()))
    expected = sorted(
        (image[..., None].tobytes(), info.class_names.index(name))
        for name, arrays in images.items()
        for image in arrays
    )
    assert sorted((x.tobytes(), y) for x, y in read) == expected


def test_train_and_test_subfolders_are_the_splits(tmp_path):
    images = digit_images()
    write_folder(tmp_path / "set" / "train", {k: v[:6] for k, v in images.items()})
    write_folder(tmp_path / "set" / "test", {k: v[6:8] for k, v in images.items() if k != "two"})
    manifest = folder.scan(str(tmp_path / "set"))
    assert manifest.class_names == ("one", "two", "zero")
    assert sorted(label for _, label in manifest.splits["test"]) == [0, 0, 2, 2]
    assert len(manifest.splits["train"]) == 18


def test_colour_images_of_several_sizes_and_formats_are_rgb_of_free_size(tmp_path):
    rng = np.random.default_rng(0)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    Image.fromarray(rng.integers(0, 256, (12, 10, 3), np.uint8)).save(tmp_path / "a" / "1.jpg")
    Image.fromarray(rng.integers(0, 256, (9, 9), np.uint8)).save(tmp_path / "a" / "2.png")
    Image.fromarray(rng.integers(0, 256, (8, 8, 4), np.uint8)).save(tmp_path / "b" / "3.png")
    grey = rng.integers(0, 256, (9, 9), np.uint8)
    Image.fromarray(grey).save(tmp_path / "b" / "4.bmp")
    (tmp_path / "b" / "notes.txt").write_text("not an image, and not read")
    manifest = folder.scan(str(tmp_path))
    assert manifest.image_shape == (None, None, 3)
    encoded = folder.encoded_image(str(tmp_path / "b" / "4.bmp"), 3)
    decoded = np.asarray(Image.open(io.BytesIO(encoded)))
    assert decoded.shape == (9, 9, 3) and (decoded == grey[..., None]).all()


def test_a_changed_folder_is_read_again(tmp_path):
    root = write_folder(tmp_path / "set", {k: v[:5] for k, v in digit_images().items()})
    data_dir = str(tmp_path / "tfds")
    assert data.dataset_info(root, data_dir=data_dir, download=True).splits["train"] == 12
    Image.fromarray(digit_images()["one"][7]).save(tmp_path / "set" / "one" / "new.png")
    assert data.dataset_info(root, data_dir=data_dir, download=True).splits["train"] == 13


def bad_folder(kind, tmp_path):
    """A folder of the given kind of mistake, and the text its error must hold."""
    root = tmp_path / "bad"
    if kind == "missing":
        return str(root), f"No such image folder: '{root}'"
    if kind == "a file":
        root.write_text("x")
        return str(root), f"'{root}' is a file; expected a folder of class subfolders"
    images = digit_images()
    if kind == "empty":
        root.mkdir()
        return str(root), f"The image folder '{root}' has no class subfolders"
    if kind == "one class":
        write_folder(root, {"zero": images["zero"][:3]})
        return str(root), f"The image folder '{root}' has one class subfolder ('zero')"
    write_folder(root, {"zero": images["zero"][:3], "one": images["one"][:3]})
    if kind == "a class without images":
        (root / "two").mkdir()
        return str(root), f"The class folder '{root / 'two'}' has no images"
    if kind == "not an image":
        (root / "one" / "x.png").write_text("text, not a PNG")
        return str(root), f"Cannot read the image '{root / 'one' / 'x.png'}'"
    # A truncated PNG: its header reads, its pixels do not.
    whole = (root / "one" / "00.png").read_bytes()
    (root / "one" / "00.png").write_bytes(whole[: len(whole) // 2])
    return str(root), f"Cannot read the image '{root / 'one' / '00.png'}'"


BAD_KINDS = ["missing", "a file", "empty", "one class", "a class without images",
             "not an image", "truncated"]  # fmt: skip


@pytest.mark.parametrize("kind", BAD_KINDS)
def test_a_bad_folder_raises_naming_it(kind, tmp_path):
    root, message = bad_folder(kind, tmp_path)
    with pytest.raises(ValueError) as error:
        # Truncated pixels are found when the folder is read into TFDS's format.
        data.dataset_info(root, data_dir=str(tmp_path / "tfds"), download=True)
    assert str(error.value).startswith(message), str(error.value)
    assert not (tmp_path / "tfds" / "sasa_image_folder").exists() or kind == "truncated"


def test_training_on_a_folder_writes_results_and_resumes_like_a_tfds_data_set(
    digit_folder, tmp_path
):
    root, data_dir, _ = digit_folder
    config = training.TrainConfig(
        dataset=root, data_dir=data_dir, output_dir=str(tmp_path / "run"), epochs=1,
        batch_size=8, base_width=4, num_heads=2, kernel_size=3, verbose=0,
    )  # fmt: skip
    results = training.train(config, log=lambda message: None)
    assert (results["dataset"], results["epochs"]) == (root, 1)
    with open(tmp_path / "run" / "results.json") as stream:
        assert json.load(stream)["test_accuracy"] == results["test_accuracy"]
    messages = []
    again = training.train(config, log=messages.append)  # Finished: reported, not trained.
    assert again == json.loads(json.dumps(results))
    assert sum("already trained" in m for m in messages) == 1


def run_command(args):
    """`python -m keras_sasa ARGS` as a user runs it: no TF_CPP_MIN_LOG_LEVEL set."""
    env = dict(os.environ)
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (REPO, os.environ.get("PYTHONPATH")) if p)
    return subprocess.run(
        [sys.executable, "-m", "keras_sasa", *args], env=env, capture_output=True, text=True,
        timeout=300, cwd=REPO,
    )  # fmt: skip


@pytest.mark.parametrize("command, kind", [("train", "truncated"), ("tune", "one class")])
def test_a_bad_folder_is_one_line_on_stderr_and_exit_code_2(command, kind, tmp_path):
    root, message = bad_folder(kind, tmp_path)
    args = [command, "--dataset", root, "--data-dir", str(tmp_path / "tfds"),
            "--output-dir", str(tmp_path / "out"), "--epochs", "1"]  # fmt: skip
    done = run_command(args)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith(f"error: {message}"), done.stderr
