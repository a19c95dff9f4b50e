"""The examples and the README's Python blocks run as written.

Each example runs in its quick mode as a real subprocess, as a user runs it: from a
scratch directory, this checkout on the path, no TF_CPP_MIN_LOG_LEVEL set. The README's
```python blocks run one after the other in one subprocess and one namespace (as a reader
goes down the page), except a block right after a `<!-- skip-test: why -->` line
(`page_blocks`; test_docs.py runs the documentation's pages the same way).
"""

import os
import re

import pytest
from page_blocks import REPO
from page_blocks import check_ran
from page_blocks import page_blocks
from page_blocks import python_blocks
from page_blocks import run_page
from page_blocks import run_python

EXAMPLES = os.path.join(REPO, "examples")


def output_line(stdout, prefix):
    """The one line of `stdout` that starts with `prefix`."""
    (line,) = [line for line in stdout.splitlines() if line.startswith(prefix)]
    return line


def max_difference(line):
    return float(re.search(r"max difference (\S+)$", line).group(1))


def check_quickstart(stdout):
    assert re.fullmatch(r"test accuracy \S+ \(360 images\), loss \S+", output_line(stdout, "test"))
    # The .keras file, loaded after `import keras_sasa`, gives the model's outputs.
    assert max_difference(output_line(stdout, "reloaded")) == 0.0


def check_jax_loop(stdout):
    assert output_line(stdout, "epoch 1: loss")
    assert output_line(stdout, "model.predict") == "model.predict gives the loop's logits: True"


def check_image_folder(stdout):
    # 12 PNGs of each digit; 2 of each class held out (round(0.2 * 12)).
    assert output_line(stdout, "/").endswith(
        "digits: 10 classes, images (8, 8, 1), {'train': 100, 'test': 20}"
    )
    assert re.fullmatch(r"test accuracy \S+ on 20 images, loss \S+", output_line(stdout, "test"))


def check_export(stdout):
    assert max_difference(output_line(stdout, "TFLite:")) < 1e-5
    assert max_difference(output_line(stdout, "ONNX:")) < 1e-5


def check_tune(stdout):
    assert re.search(r"^Search: \d+ s; best val_accuracy", stdout, re.MULTILINE)
    assert output_line(stdout, "Best trial trained 1 epochs: test accuracy")
    assert output_line(stdout, "Rebuilt: sasa_resnet26")


def check_convert(stdout):
    assert output_line(stdout, "ResNet50 at").startswith(
        "ResNet50 at 32 x 32: 23,608,202 -> 16,070,666 parameters, 16 attention layers"
    )
    assert (
        output_line(stdout, "spatial convolutions kept") == "spatial convolutions kept: conv1_conv"
    )
    assert max_difference(output_line(stdout, "reloaded")) == 0.0


CHECKS = {
    "quickstart_digits.py": check_quickstart,
    "jax_training_loop.py": check_jax_loop,
    "image_folder.py": check_image_folder,
    "export_tflite_onnx.py": check_export,
    "tune_digits.py": check_tune,
    "convert_resnet.py": check_convert,
}


def test_every_example_is_run_here():
    assert sorted(f for f in os.listdir(EXAMPLES) if f.endswith(".py")) == sorted(CHECKS)


@pytest.mark.slow
@pytest.mark.parametrize("script", sorted(CHECKS))
def test_example_runs_in_quick_mode(script, digits_dir, tmp_path):
    args = [os.path.join(EXAMPLES, script), "--quick"]
    if script == "tune_digits.py":
        args += ["--data-dir", digits_dir]
    done = run_python(args, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    CHECKS[script](done.stdout)


@pytest.mark.slow
def test_readme_python_blocks_run_in_order(tmp_path):
    assert len(page_blocks("README.md")) >= 2
    check_ran(run_page("README.md", tmp_path))


def test_skip_marks_are_read_and_only_skip_the_next_block():
    text = "a\n```python\nx = 1\n```\n<!-- skip-test: downloads -->\n```python\ny\n```\n"
    assert python_blocks(text) == [(3, "x = 1\n")]
