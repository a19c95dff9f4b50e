"""`.keras` files move between TensorFlow and JAX with the same outputs."""

import os
import pathlib
import subprocess
import sys

import keras
import numpy as np
import pytest

from backend import BACKEND
from backend_models import small_sasa_model

OTHER = "jax" if BACKEND == "tensorflow" else "tensorflow"
HERE = pathlib.Path(__file__).resolve().parent


@pytest.mark.slow  # A Python process under the other backend.
def test_keras_files_load_under_the_other_backend_with_the_same_outputs(tmp_path):
    pytest.importorskip(OTHER)
    x = np.random.default_rng(0).normal(size=(2, 12, 12, 3)).astype("float32")
    np.save(tmp_path / "x.npy", x)
    model = small_sasa_model(seed=0)
    model.save(tmp_path / "theirs.keras")
    expected = model.predict(x, verbose=0)

    env = {
        **os.environ,
        "KERAS_BACKEND": OTHER,
        "PYTHONPATH": os.pathsep.join([str(HERE.parent), os.environ.get("PYTHONPATH", "")]),
    }
    result = subprocess.run(
        [sys.executable, str(HERE / "cross_backend.py"), str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split()[-1] == OTHER

    # Saved here, loaded there.
    np.testing.assert_allclose(np.load(tmp_path / "theirs_here.npy"), expected, atol=1e-5)
    # Saved there, loaded here.
    loaded = keras.saving.load_model(tmp_path / "ours.keras", safe_mode=True)
    np.testing.assert_allclose(
        loaded.predict(x, verbose=0), np.load(tmp_path / "ours.npy"), atol=1e-5
    )
    # The two models differ (seeds 0 and 1): the comparisons above are not vacuous.
    assert np.abs(np.load(tmp_path / "ours.npy") - expected).max() > 1e-3
