"""Running code as a user does: scripts, and the ```python blocks of the Markdown pages.

A page's blocks run one after the other in one subprocess and one namespace (as a reader
goes down the page), from a scratch directory, with this checkout on the path and no
TF_CPP_MIN_LOG_LEVEL set; a block right after a `<!-- skip-test: why -->` line is left
out. Used for README.md (test_examples.py) and the pages under docs/ (test_docs.py).
"""

import glob
import os
import re
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SKIP_MARK = re.compile(r"<!--\s*skip-test\b.*-->")
TIMEOUT_S = 1800  # Generous: on shared CPUs a quick run took up to 15 minutes.

RUN_BLOCKS = r"""
namespace = {"__name__": "__page__"}
for line, code in BLOCKS:
    print(f"{PAGE} block at line {line}", flush=True)
    exec(compile(code, f"{PAGE} (block at line {line})", "exec"), namespace)
print("all blocks ran")
"""


def run_python(args, cwd, **env_changes):
    env = dict(os.environ)
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)
    env.update(env_changes)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (REPO, os.environ.get("PYTHONPATH")) if p)
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True,
        timeout=TIMEOUT_S,
    )  # fmt: skip


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


def page_blocks(page):
    """The blocks of `page`, a path relative to the checkout."""
    with open(os.path.join(REPO, page), encoding="utf-8") as stream:
        return python_blocks(stream.read())


def docs_pages():
    """The Markdown pages of the documentation site, relative to the checkout."""
    pages = glob.glob(os.path.join(REPO, "docs", "**", "*.md"), recursive=True)
    build = os.path.join(REPO, "docs", "_build") + os.sep
    return sorted(os.path.relpath(page, REPO) for page in pages if not page.startswith(build))


def run_page(page, cwd):
    """Runs the blocks of `page` in a subprocess; returns it, finished."""
    blocks = page_blocks(page)
    return run_python(["-c", f"PAGE = {page!r}\nBLOCKS = {blocks!r}\n{RUN_BLOCKS}"], cwd=cwd)


def check_ran(done):
    assert done.returncode == 0, done.stdout[-1000:] + done.stderr[-3000:]
    assert done.stdout.splitlines()[-1] == "all blocks ran"
