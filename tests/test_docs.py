"""The documentation site builds with warnings as errors.

`sphinx-build -W` fails on a broken link or cross-reference, a page missing from the
navigation, a docstring that does not parse, or an API entry autodoc cannot import: the
same command a contributor runs (README's "Contributing"), in a subprocess, into a
scratch directory.
"""

import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
def test_site_builds_with_warnings_as_errors(tmp_path):
    html = tmp_path / "html"
    done = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html",
         os.path.join(REPO, "docs"), str(html)],
        cwd=tmp_path, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-5000:]
    # The guides and the API reference generated from the docstrings are there.
    for page in ("index", "layer", "training", "api/layers", "api/training"):
        assert (html / f"{page}.html").is_file(), page
    layers = (html / "api" / "layers.html").read_text(encoding="utf-8")
    assert "keras_sasa.layers.LocalSelfAttention2D" in layers
    assert "return_attention_scores" in layers
