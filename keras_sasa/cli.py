"""The command line: `python -m keras_sasa COMMAND ...`.

Each command is a function taking the parsed arguments; `main` turns the errors a user can
cause (bad values, missing files) into one line on stderr and a non-zero exit code.
"""

import argparse
import os
import sys


class UsageError(Exception):
    """A mistake in the command line, reported as one line without a traceback."""


def _positive_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _bench(args):
    from keras_sasa import benchmark

    os.makedirs(args.output_dir, exist_ok=True)
    jit_modes = (False,) if args.no_jit else (False, True)
    results = benchmark.run(benchmark.default_configs(args.quick), jit_modes, args.repeats)
    extra = ""
    if not args.no_models:
        models = benchmark.run_models(jit_modes=jit_modes, repeats=args.repeats)
        extra = (
            "\nA whole training step of SASA-ResNet-26 against the conv ResNet-26 (same depth, "
            "conv stem and 3x3 convolutions), `model.train_on_batch`, images per second:\n\n"
            + benchmark.model_table(models)
            + "\n"
        )
        results_json = benchmark.results_to_json(results + models)
    else:
        results_json = benchmark.results_to_json(results)
    with open(os.path.join(args.output_dir, "benchmark.json"), "w") as f:
        f.write(results_json)
    report = benchmark.write_report(
        results,
        os.path.join(args.output_dir, "benchmark.md"),
        os.path.join(args.output_dir, "benchmark.png"),
        extra=extra,
    )
    print(report)


def build_parser():
    parser = argparse.ArgumentParser(
        prog="python -m keras_sasa",
        description="Stand-alone self-attention (Ramachandran et al. 2019) for Keras.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    bench = commands.add_parser(
        "bench", help="time LocalSelfAttention2D against its reference and Conv2D"
    )
    bench.add_argument("--quick", action="store_true", help="one small shape only")
    bench.add_argument("--no-jit", action="store_true", help="skip jit_compile=True")
    bench.add_argument("--no-models", action="store_true", help="skip the ResNet-26 comparison")
    bench.add_argument("--repeats", type=_positive_int, default=3)
    bench.add_argument("--output-dir", default="benchmark_results")
    bench.set_defaults(run=_bench)
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args.run(args)
    except (UsageError, ValueError, TypeError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0
