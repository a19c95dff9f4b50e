"""`python -m keras_sasa bench --accelerator` on a machine without accelerators."""

import os
import re
import subprocess
import sys

import pytest

# A process test (see README, "Tests").
pytestmark = pytest.mark.slow

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_accelerator_run_falls_back_to_the_cpu_and_writes_its_table(tmp_path):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=REPO_ROOT, CUDA_VISIBLE_DEVICES="")
    process = subprocess.run(
        [sys.executable, "-m", "keras_sasa", "bench", "--accelerator", "--quick", "--no-jit"]
        + ["--repeats", "1", "--output-dir", str(tmp_path)],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert process.returncode == 0, process.stderr[-2000:]
    assert os.listdir(tmp_path) == ["cpu.md"]
    text = (tmp_path / "cpu.md").read_text()
    assert text.startswith("# keras-sasa on cpu (tensorflow)\n")
    number = r"(\d+\.\d+)"
    row = re.search(rf"\| \(2, 14, 32\) \| False \| {number} \| {number} \| {number} \|", text)
    assert row, text
    attention, conv, ratio = (float(g) for g in row.groups())
    # The ratio of the unrounded times, each time and the ratio printed to 2 decimals: it
    # lies within what the rounded times allow (conv takes about 1 ms here, so a fixed
    # tolerance on attention / conv of the printed times fails by rounding alone).
    half = 0.005
    assert (attention - half) / (conv + half) - half <= ratio
    assert ratio <= (attention + half) / (conv - half) + half
    assert re.search(rf"\| 32x32 \| 2 \| False \| {number} \| {number} \| {number} \|", text)
    assert "True" not in text
    sizes = re.findall(r"^\| (\d+) \| \d+\.\d+ \|$", text, re.MULTILINE)
    assert sizes == ["4", "7", "8"]
