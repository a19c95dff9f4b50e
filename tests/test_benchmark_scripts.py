"""benchmarks/ holds tools only: each script is named, with its command, in the docs.

A script of benchmarks/ reproduces a table that the documentation shows, so the docs
pages must give the command that runs it (`python benchmarks/<script>` or `bash
benchmarks/<script>`); and no script reads old code from git.
"""

import pathlib
import re

import pytest

REPO = pathlib.Path(__file__).resolve().parent.parent
SCRIPTS = sorted(
    path.name
    for path in (REPO / "benchmarks").iterdir()
    if path.suffix in (".py", ".sh") and not path.name.startswith("_")
)


def docs_text():
    pages = sorted((REPO / "docs").rglob("*.md")) + [REPO / "README.md"]
    return "\n".join(page.read_text() for page in pages if page.exists())


def test_benchmarks_holds_scripts():
    assert "run_benchmarks.py" in SCRIPTS


@pytest.mark.parametrize("script", SCRIPTS)
def test_every_benchmark_script_is_named_with_its_command_in_the_docs(script):
    command = re.compile(rf"(python|bash) benchmarks/{re.escape(script)}\b")
    assert command.search(docs_text()), f"no docs page gives the command of {script}"


@pytest.mark.parametrize("script", SCRIPTS)
def test_no_benchmark_script_reads_code_from_git(script):
    text = (REPO / "benchmarks" / script).read_text()
    assert not re.search(r"git\s+show|\"git\"", text), script
