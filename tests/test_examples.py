"""The examples and the Python blocks of the README and the documentation run as written.

Each example runs in its quick mode as a real subprocess, as a user runs it: from a
scratch directory, this checkout on the path, no TF_CPP_MIN_LOG_LEVEL set. The ```python
blocks of README.md and of every page under docs/ (found by name, so a new page is run
too) run page by page: one subprocess and one namespace per page, in a scratch directory,
the blocks one after the other (as a reader goes down the page), except a block right
after a `<!-- skip-test: why -->` line.
"""

import glob
import os
import re
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLES = os.path.join(REPO, "examples")
SKIP_MARK = re.compile(r"<!--\s*skip-test\b.*-->")
TIMEOUT_S = 1800  # Generous: on shared CPUs a quick run took up to 15 minutes.


def run_python(args, cwd, **env_changes):
    env = dict(os.environ)
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)
    env.update(env_changes)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (REPO, os.environ.get("PYTHONPATH")) if p)
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True,
        timeout=TIMEOUT_S,
    )  # fmt: skip


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


CHECKS = {
    "quickstart_digits.py": check_quickstart,
    "jax_training_loop.py": check_jax_loop,
    "image_folder.py": check_image_folder,
    "export_tflite_onnx.py": check_export,
    "tune_digits.py": check_tune,
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


def python_blocks(text):
    """[(line number, code)] of the ```python blocks not marked to be skipped."""
    blocks, lines = [], text.splitlines()
    index = 0
    while index < len(lines):
        if lines[index].strip() == "```python":
            start = index + 1
            end = lines.index("```", start)
            previous = next((line for line in reversed(lines[:index]) if line.strip()), "")
            if not SKIP_MARK.search(previous):
                blocks.append((start + 1, "\n".join(lines[start:end]) + "\n"))
            index = end
        index += 1
    return blocks


def read_blocks(page):
    with open(os.path.join(REPO, page), encoding="utf-8") as stream:
        return python_blocks(stream.read())


def docs_pages():
    """The Markdown pages of the documentation site, relative to the checkout."""
    pages = glob.glob(os.path.join(REPO, "docs", "**", "*.md"), recursive=True)
    build = os.path.join(REPO, "docs", "_build") + os.sep
    return sorted(os.path.relpath(page, REPO) for page in pages if not page.startswith(build))


PAGES_WITH_CODE = ["README.md"] + [page for page in docs_pages() if read_blocks(page)]

RUN_BLOCKS = r"""
import sys
namespace = {"__name__": "__page__"}
for line, code in BLOCKS:
    print(f"{PAGE} block at line {line}", flush=True)
    exec(compile(code, f"{PAGE} (block at line {line})", "exec"), namespace)
print("all blocks ran")
"""


def test_readme_has_python_blocks():
    assert len(read_blocks("README.md")) >= 2


@pytest.mark.slow
@pytest.mark.parametrize("page", PAGES_WITH_CODE)
def test_python_blocks_run_in_order(page, tmp_path):
    blocks = read_blocks(page)
    done = run_python(["-c", f"PAGE = {page!r}\nBLOCKS = {blocks!r}\n{RUN_BLOCKS}"], cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-1000:] + done.stderr[-3000:]
    assert done.stdout.splitlines()[-1] == "all blocks ran"


def test_skip_marks_are_read_and_only_skip_the_next_block():
    text = "a\n```python\nx = 1\n```\n<!-- skip-test: downloads -->\n```python\ny\n```\n"
    assert python_blocks(text) == [(3, "x = 1\n")]


def test_docs_pages_are_found_and_include_the_guides():
    pages = docs_pages()
    assert {"docs/index.md", "docs/layer.md", "docs/api/layers.md"} <= set(pages)
    assert not any(page.startswith("docs/_build") for page in pages)
