"""Layer and model benchmarks: `python -m keras_sasa bench`, its results named by configuration.

    python benchmarks/run_benchmarks.py [bench flags: --backends, --kernel-sizes, --quick, ...]

Prints the tables and writes benchmark.md, benchmark.png and benchmark.json to
benchmarks/results/bench_<backends>[_k<sizes>][_quick][_nojit][_nomodels]/ (or to
--output-dir), so that runs of different configurations do not overwrite each other:

    python benchmarks/run_benchmarks.py --backends tensorflow
        -> benchmarks/results/bench_tensorflow/
    python benchmarks/run_benchmarks.py --backends tensorflow,jax --kernel-sizes 7 --no-models
        -> benchmarks/results/bench_tensorflow_jax_k7_nomodels/
"""

import argparse
import os
import sys

from keras_sasa.cli import main

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def results_name(argv):
    """The folder name of a `bench` configuration, from its flags."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--backends", default="tensorflow")
    parser.add_argument("--kernel-sizes")
    for flag in ("--quick", "--no-jit", "--no-models"):
        parser.add_argument(flag, action="store_true")
    args, _ = parser.parse_known_args(argv)
    parts = ["bench", *(b.strip() for b in args.backends.split(",") if b.strip())]
    if args.kernel_sizes:
        parts.append("k" + "_".join(k.strip() for k in args.kernel_sizes.split(",")))
    parts += [
        name
        for name, on in (
            ("quick", args.quick),
            ("nojit", args.no_jit),
            ("nomodels", args.no_models),
        )
        if on
    ]
    return "_".join(parts)


def given(argv, flag):
    return any(arg == flag or arg.startswith(flag + "=") for arg in argv)


if __name__ == "__main__":
    argv = sys.argv[1:]
    if not given(argv, "--backends"):
        argv += ["--backends", "tensorflow"]
    if not given(argv, "--output-dir"):
        argv += ["--output-dir", os.path.join(RESULTS, results_name(argv))]
    sys.exit(main(["bench", *argv]))
