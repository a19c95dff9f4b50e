"""Wall time of every script of examples/ in its quick mode (docs/performance.md).

    python benchmarks/example_times.py [--repeat N]

Each example runs as a user runs it, in a fresh process from a scratch directory with
this checkout on the path and no TF_CPP_MIN_LOG_LEVEL set; the time includes Python's
start and the imports. Prints one line per example (the median of N runs) and writes
them to benchmarks/results/example_times.txt.
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLES = os.path.join(REPO, "examples")


def run_once(script):
    env = dict(os.environ)
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (REPO, env.get("PYTHONPATH")) if p)
    with tempfile.TemporaryDirectory() as scratch:
        start = time.perf_counter()
        subprocess.run(
            [sys.executable, os.path.join(EXAMPLES, script), "--quick"],
            cwd=scratch, env=env, check=True, capture_output=True,
        )  # fmt: skip
        return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    lines = []
    for script in sorted(f for f in os.listdir(EXAMPLES) if f.endswith(".py")):
        seconds = [run_once(script) for _ in range(args.repeat)]
        lines.append(f"{script:24s} {statistics.median(seconds):6.1f} s")
        print(lines[-1], flush=True)
    with open(os.path.join(REPO, "benchmarks", "results", "example_times.txt"), "w") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
