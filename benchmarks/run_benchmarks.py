"""Benchmarks of keras_sasa; the same as `python -m keras_sasa bench`.

    python benchmarks/run_benchmarks.py [--quick] [--no-jit] [--output-dir DIR]

Prints a table and writes DIR/benchmark.md, DIR/benchmark.png and DIR/benchmark.json
(default DIR: benchmarks/results).
"""

import os
import sys

from keras_sasa.cli import main

if __name__ == "__main__":
    argv = sys.argv[1:]
    if "--output-dir" not in argv:
        argv += [
            "--output-dir",
            os.path.join(os.path.dirname(os.path.abspath(__file__)), "results"),
        ]
    sys.exit(main(["bench", *argv]))
