"""The documentation site builds with warnings as errors, and its Python blocks run.

`sphinx-build -W` fails on a broken link or cross-reference, a page missing from the
navigation, a docstring that does not parse, or an API entry autodoc cannot import: the
same command a contributor runs (README's "Contributing"), in a subprocess, into a
scratch directory. Every page under docs/ with ```python blocks (found by name, so a new
page is run too) runs them as a reader would: each page from its own directory, in its own
namespace, all pages in one process, started once for this module (`page_blocks.run_pages`).
"""

import os
import subprocess
import sys

import pytest
from page_blocks import REPO
from page_blocks import check_ran
from page_blocks import docs_pages
from page_blocks import page_blocks
from page_blocks import run_pages

PAGES_WITH_CODE = [page for page in docs_pages() if page_blocks(page)]


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


def test_pages_are_found_and_the_guides_have_python_blocks():
    pages = docs_pages()
    assert {"docs/index.md", "docs/layer.md", "docs/api/layers.md"} <= set(pages)
    assert not any(page.startswith(os.path.join("docs", "_build")) for page in pages)
    assert {"docs/install.md", "docs/layer.md", "docs/export.md"} <= set(PAGES_WITH_CODE)


@pytest.fixture(scope="module")
def page_runs(tmp_path_factory):
    return run_pages(PAGES_WITH_CODE, tmp_path_factory.mktemp("pages"))


@pytest.mark.slow
@pytest.mark.parametrize("page", PAGES_WITH_CODE)
def test_python_blocks_run_in_order(page, page_runs):
    check_ran(page_runs[page])
