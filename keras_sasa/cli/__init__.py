"""The command line: `python -m keras_sasa COMMAND ...`.

Commands: `train` (keras_sasa.training), `tune` (keras_sasa.tuning), `summary` (the
paper's Tables 1 and 3 beside our models), `bench` (LocalSelfAttention2D's speed),
`export` (keras_sasa.export) and `attention-map` (keras_sasa.visualize). Each
command is a function taking the parsed arguments; `main` turns the errors a user can
cause (bad values, missing files, an unwritable output directory) into one line on stderr
and a non-zero exit code.

The package imports nothing heavy: `--help` and mistakes in the arguments are answered
before Keras or TensorFlow is imported. TensorFlow's C++ start-up messages (oneDNN, CUDA
drivers, CPU instructions: a dozen lines before the first word of the command) are held
to the user's TF_CPP_MIN_LOG_LEVEL, or to errors where it is not set
(`output.start_tensorflow`).

- `flags`: argparse types, and the flags built from `TrainConfig` and `SearchSpace` fields.
- `train`: the `train` and `tune` commands.
- `tools`: `summary`, `bench`, `export` and `attention-map`.
- `output`: TensorFlow's start-up lines, and output sent to a log.
"""

import sys

from keras_sasa.cli import convert
from keras_sasa.cli import flags
from keras_sasa.cli import tools
from keras_sasa.cli import train
from keras_sasa.cli.flags import UsageError
from keras_sasa.cli.output import keras_backend
from keras_sasa.cli.output import start_tensorflow

# Commands that import TensorFlow whatever the Keras backend (tf.data, tf.distribute, the
# exporters, the benchmark); the others import it only through Keras's TensorFlow backend.
_TENSORFLOW_COMMANDS = ("train", "tune", "bench", "export")


def build_parser():
    parser = flags.Parser(
        prog="python -m keras_sasa",
        description="Stand-alone self-attention (Ramachandran et al. 2019) for Keras.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    train.add_train_parser(commands)
    train.add_tune_parser(commands)
    tools.add_summary_parser(commands)
    tools.add_bench_parser(commands)
    tools.add_export_parser(commands)
    tools.add_attention_map_parser(commands)
    convert.add_convert_parser(commands)
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)  # Before any heavy import: --help, bad values.
    try:
        if hasattr(args, "check"):  # What a command can check before the heavy imports.
            args.check(args)
        if args.command in _TENSORFLOW_COMMANDS or keras_backend() == "tensorflow":
            start_tensorflow()
        args.run(args)
    except (UsageError, ValueError, TypeError, OSError) as error:
        message = " ".join(str(error).split())  # One line, whatever the message.
        print(f"error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0
