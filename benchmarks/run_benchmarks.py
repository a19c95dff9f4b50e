"""Benchmarks of keras_sasa: python benchmarks/run_benchmarks.py [--quick] [--output-dir DIR].

Prints a table and writes DIR/benchmark.md, DIR/benchmark.png and DIR/benchmark.json.
The same runs as `python -m keras_sasa bench`.
"""

import argparse
import os

from keras_sasa import benchmark


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="one small shape only")
    parser.add_argument("--no-jit", action="store_true", help="skip jit_compile=True")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--output-dir", default=os.path.join(os.path.dirname(__file__), "results"))
    args = parser.parse_args(argv)
    os.makedirs(args.output_dir, exist_ok=True)
    jit_modes = (False,) if args.no_jit else (False, True)
    results = benchmark.run(benchmark.default_configs(args.quick), jit_modes, args.repeats)
    with open(os.path.join(args.output_dir, "benchmark.json"), "w") as f:
        f.write(benchmark.results_to_json(results))
    print(
        benchmark.write_report(
            results,
            os.path.join(args.output_dir, "benchmark.md"),
            os.path.join(args.output_dir, "benchmark.png"),
        )
    )


if __name__ == "__main__":
    main()
