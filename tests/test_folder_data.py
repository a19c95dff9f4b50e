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


# Each mode and format, by class name: (format, PIL mode). Grey-scale modes first.
MODES = {
    "png_l": ("PNG", "L"), "png_la": ("PNG", "LA"), "png_1": ("PNG", "1"),
    "png_i16": ("PNG", "I;16"), "jpg_l": ("JPEG", "L"), "png_rgb": ("PNG", "RGB"),
    "png_rgba": ("PNG", "RGBA"), "png_p": ("PNG", "P"), "jpg_rgb": ("JPEG", "RGB"),
    "jpg_cmyk": ("JPEG", "CMYK"), "gif_p": ("GIF", "P"), "bmp_rgb": ("BMP", "RGB"),
}  # fmt: skip
GREY_CLASSES = ("png_l", "png_la", "png_1", "png_i16", "jpg_l")


def write_image(path, image_format, mode, size, seed):
    """A random image of `size` (height, width) in `mode`, saved as `image_format`;
    returns its pixels as 8-bit RGB (16-bit grey scaled to 8 bits)."""
    height, width = size
    rgb = np.random.default_rng(seed).integers(0, 256, (height, width, 3), np.uint8)
    if mode == "I;16":
        grey = rgb[..., 0]
        Image.fromarray(grey.astype(np.uint16) * 257).save(path, format=image_format)
        return np.repeat(grey[..., None], 3, axis=-1)
    image = Image.fromarray(rgb)
    if mode == "RGBA":
        image = Image.fromarray(np.dstack([rgb, rgb[..., :1]]))
    elif mode == "LA":
        image = image.convert("L").convert("LA")
    elif mode != "RGB":
        image = image.convert(mode)
    image.save(path, format=image_format)
    with Image.open(path) as saved:  # JPEG's and GIF's pixels are what was saved.
        return np.asarray(saved.convert("RGB"))


def write_mode_folder(root, classes, sizes):
    """A class per mode of `classes` with an image of each size; the expected pixels."""
    expected = {}
    for index, name in enumerate(classes):
        image_format, mode = MODES[name]
        os.makedirs(root / name)
        extension = {"JPEG": "jpg"}.get(image_format, image_format.lower())
        expected[name] = [
            write_image(root / name / f"{i}.{extension}", image_format, mode, size, [index, i])
            for i, size in enumerate(sizes)
        ]
    return str(root), expected


def test_every_mode_and_format_reads_as_its_rgb_pixels(tmp_path):
    root, expected = write_mode_folder(tmp_path / "modes", list(MODES), [(16, 16)] * 2)
    data_dir = str(tmp_path / "tfds")
    info = data.dataset_info(root, data_dir=data_dir, download=True)
    assert info.image_shape == (16, 16, 3)
    unmatched = {(name, i) for name in MODES for i in range(2)}
    for split in ("train", "test"):
        for images, labels in data.load_dataset(root, split, 64, data_dir=data_dir):
            for image, label in zip(images.numpy(), labels.numpy()):
                name = info.class_names[label]
                pixels = np.rint(image * 255).astype(int)
                # PIL's and TensorFlow's JPEG decoders round differently; the rest is exact.
                tolerance = 8 if MODES[name][0] == "JPEG" else 0
                errors = [np.abs(pixels - e).max() for e in expected[name]]
                assert min(errors) <= tolerance, (name, errors)
                unmatched.discard((name, int(np.argmin(errors))))
    assert not unmatched


@pytest.mark.parametrize("classes, channels", [(list(MODES), 3), (GREY_CLASSES, 1)])
def test_crops_of_images_of_several_sizes_keep_their_channels(classes, channels, tmp_path):
    """Crops of images of several sizes are 224 x 224 by default, with the data set's
    channels (a crop lost them, and the attention stem failed on an unknown count)."""
    root, _ = write_mode_folder(tmp_path / "mixed", classes, [(40, 70), (90, 33)])
    data_dir = str(tmp_path / "tfds")
    assert data.dataset_info(root, data_dir=data_dir).image_shape == (None, None, channels)
    for augmented in (True, False):
        dataset = data.load_dataset(root, "train", 2, data_dir=data_dir, training=augmented, seed=0)
        assert dataset.element_spec[0].shape.as_list()[1:] == [224, 224, channels]
        images, _ = next(iter(dataset))
        assert images.shape == (2, 224, 224, channels)


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
    if kind == "a link to nowhere":
        os.symlink(root / "one" / "nowhere.png", root / "one" / "x.png")
        return str(root), f"Cannot read the image '{root / 'one' / 'x.png'}': No such file"
    if kind == "one image per class":
        for name in ("zero", "one"):
            for extra in sorted((root / name).iterdir())[1:]:
                extra.unlink()
        return str(root), f"The image folder '{root}' has one image per class, too few"
    if kind == "empty test folder":
        os.rename(root, tmp_path / "train")
        (tmp_path / "test").mkdir()
        os.makedirs(root)
        os.rename(tmp_path / "train", root / "train")
        os.rename(tmp_path / "test", root / "test")
        return str(root), f"The split folder '{root / 'test'}' has no class subfolders"
    if kind == "truncated":  # A truncated PNG: its header reads, its pixels do not.
        whole = (root / "one" / "00.png").read_bytes()
        (root / "one" / "00.png").write_bytes(whole[: len(whole) // 2])
        return str(root), f"Cannot read the image '{root / 'one' / '00.png'}'"
    image_format = kind.split()[-1]  # "truncated png", ..., "damaged png"
    path = root / "one" / f"x.{image_format}"
    path.write_bytes(damaged_image(kind))
    return str(root), f"Cannot read the image '{path}'"


def damaged_image(kind):
    """The bytes of a 12 x 10 colour image, damaged: "truncated FORMAT" keeps half of the
    file (its header reads, its pixels do not); "damaged png" breaks the check sum of the
    pixel data, which PIL does not check and TensorFlow's decoder does."""
    damage, image_format = kind.split()
    pixels = np.random.default_rng(0).integers(0, 256, (12, 10, 3), np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG" if image_format == "jpg" else image_format)
    whole = bytearray(buffer.getvalue())
    if damage == "truncated":
        return bytes(whole[: len(whole) // 2])
    start = whole.index(b"IDAT")
    length = int.from_bytes(whole[start - 4 : start], "big")
    whole[start + 4 + length] ^= 0xFF  # The first byte of the IDAT chunk's CRC.
    return bytes(whole)


BAD_KINDS = ["missing", "a file", "empty", "one class", "a class without images",
             "not an image", "truncated", "truncated jpg", "truncated bmp",
             "truncated gif", "damaged png", "a link to nowhere", "one image per class",
             "empty test folder"]  # fmt: skip


@pytest.mark.parametrize("kind", BAD_KINDS)
def test_a_bad_folder_raises_naming_it(kind, tmp_path):
    root, message = bad_folder(kind, tmp_path)
    with pytest.raises(ValueError) as error:
        # Truncated pixels are found when the folder is read into TFDS's format.
        data.dataset_info(root, data_dir=str(tmp_path / "tfds"), download=True)
    assert str(error.value).startswith(message), str(error.value)
    damaged_pixels = kind.startswith(("truncated", "damaged"))
    assert not (tmp_path / "tfds" / "sasa_image_folder").exists() or damaged_pixels
    # Damaged pixels are found before anything of the folder is written in TFDS's format.
    assert not list((tmp_path / "tfds").glob("sasa_image_folder/*/*/*")), kind


def test_training_on_a_folder_writes_results_and_resumes_like_a_tfds_data_set(
    digit_folder, tmp_path
):
    root, data_dir, _ = digit_folder
    config = training.TrainConfig(
        dataset=root, data_dir=data_dir, output_dir=str(tmp_path / "run"), epochs=1,
        batch_size=8, base_width=4, num_heads=2, kernel_size=3, verbose=0,
        stem="conv_small", attention_stages=(),  # The conv baseline: the data is checked.
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


@pytest.mark.slow
def test_a_mixed_folder_trains_with_the_defaults_once_its_damaged_file_is_removed(tmp_path):
    """Every mode and format, two sizes, the default 224-pixel crops and attention stem:
    a damaged file is refused in one line before anything is trained; removed, it trains."""
    root, _ = write_mode_folder(tmp_path / "mixed", list(MODES), [(40, 70), (90, 33)])
    damaged = tmp_path / "mixed" / "png_rgb" / "damaged.png"
    damaged.write_bytes(damaged_image("damaged png"))
    args = ["train", "--dataset", root, "--data-dir", str(tmp_path / "tfds"),
            "--output-dir", str(tmp_path / "out"), "--epochs", "1", "--batch-size", "4",
            "--base-width", "8", "--num-heads", "2", "--kernel-size", "3"]  # fmt: skip
    done = run_command(args)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith(f"error: Cannot read the image '{damaged}'"), done.stderr
    assert not (tmp_path / "out").exists()
    damaged.unlink()
    done = run_command(args)
    assert done.returncode == 0, done.stderr[-2000:]
    with open(tmp_path / "out" / "results.json") as stream:
        results = json.load(stream)
    assert (results["config"]["image_size"], results["config"]["stem"]) == (224, "attention")
    assert np.isfinite(results["test_loss"])
