"""Running code as a user does: scripts, and the ```python blocks of the Markdown pages.

A page's blocks run one after the other in one namespace (as a reader goes down the page),
from a scratch directory of its own, with this checkout on the path and no
TF_CPP_MIN_LOG_LEVEL set; a block right after a `<!-- skip-test: why -->` line is left
out. Used for README.md (test_examples.py) and the pages under docs/ (test_docs.py). Several
pages can share one subprocess (`run_pages`), to pay Python's and TensorFlow's start once:
each page still gets a fresh namespace, its own directory, its own stdout and stderr, and
Keras's global state (dtype policy, layer names) as a new process has it.
"""

import glob
import os
import re
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SKIP_MARK = re.compile(r"<!--\s*skip-test\b.*-->")
TIMEOUT_S = 1800  # Generous: on shared CPUs a quick run took up to 15 minutes.

RUN_PAGES = r"""
import os, sys, traceback
environ = dict(os.environ)
for number, (PAGE, BLOCKS) in enumerate(PAGES):
    directory = os.path.join(ROOT, str(number))
    os.makedirs(directory)
    os.chdir(directory)
    sys.stdout.flush()
    sys.stderr.flush()
    for fd, name in ((1, "stdout"), (2, "stderr")):  # C++ log lines included
        stream = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        os.dup2(stream, fd)
        os.close(stream)
    namespace = {"__name__": "__page__"}
    returncode = 1
    try:
        for line, code in BLOCKS:
            print(f"{PAGE} block at line {line}", flush=True)
            exec(compile(code, f"{PAGE} (block at line {line})", "exec"), namespace)
        print("all blocks ran")
        returncode = 0
    except BaseException:
        traceback.print_exc()
    sys.stdout.flush()
    sys.stderr.flush()
    with open("returncode", "w") as stream:
        stream.write(str(returncode))
    del namespace
    os.environ.clear()
    os.environ.update(environ)
    if "keras" in sys.modules:  # as the next page's reader finds Keras in a new process
        import keras
        keras.mixed_precision.set_global_policy("float32")
        keras.utils.clear_session()
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


def run_pages(pages, cwd):
    """Runs the blocks of each of `pages`, in order, in one subprocess from `cwd`;
    returns {page: its finished run}, a `subprocess.CompletedProcess` of the page alone
    (returncode 0 if all its blocks ran, else 1, or the process's own if it died there)."""
    pages = list(pages)
    script = f"ROOT = {os.fspath(cwd)!r}\nPAGES = {[(p, page_blocks(p)) for p in pages]!r}\n"
    done = run_python(["-c", script + RUN_PAGES], cwd=cwd)
    runs = {}
    for number, page in enumerate(pages):
        directory = os.path.join(cwd, str(number))
        if not os.path.isdir(directory):
            message = f"The process ended (exit code {done.returncode}) before {page} ran.\n"
            runs[page] = subprocess.CompletedProcess(
                done.args, done.returncode or 1, done.stdout, message + done.stderr
            )
            continue
        outputs = {}
        for name in ("stdout", "stderr", "returncode"):
            path = os.path.join(directory, name)
            outputs[name] = open(path, encoding="utf-8").read() if os.path.exists(path) else None
        if outputs["returncode"] is None:  # the process died in this page
            returncode, outputs["stderr"] = done.returncode or 1, outputs["stderr"] + done.stderr
        else:
            returncode = int(outputs["returncode"])
        runs[page] = subprocess.CompletedProcess(
            done.args, returncode, outputs["stdout"], outputs["stderr"]
        )
    return runs


def run_page(page, cwd):
    """Runs the blocks of `page` in a subprocess; returns it, finished."""
    return run_pages([page], cwd)[page]


def check_ran(done):
    assert done.returncode == 0, done.stdout[-1000:] + done.stderr[-3000:]
    assert done.stdout.splitlines()[-1] == "all blocks ran"
