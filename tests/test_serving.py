"""`python -m keras_sasa bench --serving --quick`: the latency table of exported models."""

import json
import os
import subprocess
import sys

import pytest

# A process test (see README, "Tests").
pytestmark = pytest.mark.slow

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_serving_bench_times_every_model_runtime_and_batch(tmp_path):
    # The user's environment: no TF_CPP_MIN_LOG_LEVEL.
    env = {key: value for key, value in os.environ.items() if key != "TF_CPP_MIN_LOG_LEVEL"}
    env["PYTHONPATH"] = REPO_ROOT
    process = subprocess.run(
        [sys.executable, "-m", "keras_sasa", "bench", "--serving", "--quick"]
        + ["--output-dir", str(tmp_path)],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert process.returncode == 0, process.stderr[-2000:]
    name = "serving-16-batch1-2-quick"
    assert sorted(os.listdir(tmp_path)) == [f"{name}.{ext}" for ext in ("json", "log", "md")]
    results = json.loads((tmp_path / f"{name}.json").read_text())
    measured = {(r["model"], r["runtime"], r["batch"]) for r in results}
    assert measured == {
        (model, runtime, batch)
        for model in ("sasa", "conv")
        for runtime in ("onnxruntime", "litert", "keras")
        for batch in (1, 2)
    }
    assert all(0 < r["median_ms"] <= r["p90_ms"] and r["runs"] == 3 for r in results)
    table = (tmp_path / f"{name}.md").read_text()
    assert table.count("| 16x16 |") == 6 and table in process.stdout + "\n"
    # The converters' and runtimes' words (LiteRT's XNNPACK line too) went to the log, not
    # to the command's output.
    assert "TensorSpec" not in process.stdout and process.stderr == ""
