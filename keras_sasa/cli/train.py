"""The `train` and `tune` commands: their flags come from the fields of `TrainConfig` and
`SearchSpace` (help, choices and bounds next to each field)."""

import functools
import os

from keras_sasa.cli import flags
from keras_sasa.training import config as train_config
from keras_sasa.tuning import space as search_space

# `TrainConfig` fields that `tune` takes, in the order of its help; where a flag means
# something else for a search, its help says so here.
_TUNE_FIELDS = (
    "dataset",
    "data_dir",
    "train_split",
    "test_split",
    "image_size",
    "model",
    "batch_size",
    "seed",
)
# The flags of `tune` that are arguments of `keras_sasa.tuning.search`.
_SEARCH_ARGUMENTS = (
    "tuner",
    "max_trials",
    "epochs",
    "output_dir",
    "validation_split",
    "overwrite",
    "hyperband_factor",
)
_TUNE_HELP = {
    "test_split": "scores the trials with --validation-split none",
    "strategy": "tf.distribute strategy of the trials (default: auto)",
}


def add_train_parser(commands):
    train = commands.add_parser(
        "train",
        help="train a SASA-ResNet with the paper's recipe (default: digits, offline)",
        description=(
            "Train a SASA-ResNet with the paper's recipe: SGD with Nesterov momentum, "
            "linear warm-up then cosine decay, EMA of the weights. Options left out are "
            "chosen from the data: small images (<= 64 pixels) get the small stems and a "
            "small, short run; large images the paper's ImageNet settings. Killed and "
            "started again with the same command, a run continues from its last finished "
            "epoch; a finished run reports its results."
        ),
    )
    groups = {name: train.add_argument_group(name) for name in ("data", "model", "recipe", "run")}
    flags.add_config_flags(groups, train_config.TrainConfig)
    groups["recipe"].add_argument(
        "--seeds",
        type=flags.seed_list,
        metavar="S,...",
        help="train once per seed, each in OUTPUT_DIR/seed_S, and report the mean and "
        "standard deviation (e.g. 0,1,2; replaces --seed)",
    )
    train.set_defaults(run=_train, check=_check_tpu)


def _check_tpu(args):
    """--tpu names the TPU of --strategy tpu; any other strategy would ignore it or, for
    auto, skip it without a word when it cannot be reached."""
    tpu, strategy = getattr(args, "tpu", None), getattr(args, "strategy", "auto")
    if tpu is not None and strategy != "tpu":
        raise flags.UsageError(
            f"--tpu {tpu} needs --strategy tpu (got --strategy {strategy}); without "
            "--tpu, --strategy auto finds the TPU of TPU_NAME or of a Cloud TPU VM."
        )


def _out_of_memory_in_one_line(command):
    """`command(args)`, with running out of memory said in one line (TensorFlow's error is
    dozens of lines): which flags to lower, and where to train with them."""

    @functools.wraps(command)
    def run(args):
        import tensorflow as tf

        try:
            return command(args)
        except (tf.errors.ResourceExhaustedError, MemoryError) as error:
            lines = str(getattr(error, "message", error) or type(error).__name__).splitlines()
            where = getattr(args, "output_dir", None) or "the output directory"
            raise flags.UsageError(
                f"Out of memory ({lines[0][:200].strip()}): train with a smaller --batch-size "
                f"or --image-size, in another --output-dir or after deleting {where}."
            ) from None

    return run


@_out_of_memory_in_one_line
def _train(args):
    from keras_sasa import training

    config = training.TrainConfig(**flags.config_values(args, training.TrainConfig))
    if args.seeds is None:
        results = training.train(config)
        print()
        print(training.format_results(results))
        output_dir = results["config"]["output_dir"]
    else:
        results = training.train_seeds(config, args.seeds)
        print()
        print(training.format_seed_results(results))
        output_dir = os.path.dirname(results["runs"][0]["config"]["output_dir"])
    print(f"\nResults: {os.path.join(output_dir, 'results.json')}")


def add_tune_parser(commands):
    tune = commands.add_parser(
        "tune",
        help="search the paper's design space with keras-tuner (default: digits, offline)",
        description=(
            "Search kernel size, heads, stem, attention groups, positional encoding, width, "
            "learning rate, weight decay and label smoothing with keras-tuner; each trial "
            "trains with the train command's pipelines and recipe. Started again in the "
            "same output directory, a search continues; a larger --max-trials extends it. "
            "Writes OUTPUT_DIR/tuning_results.json and prints the trials ranked. Lists are "
            "comma-separated (--kernel-sizes 3,5); ranges are MIN:MAX or one value "
            "(--learning-rate 1e-3:1e-1)."
        ),
    )
    search = tune.add_argument_group("search")
    search.add_argument(
        "--tuner", default="random", help="random|hyperband|bayesian (default: random)"
    )
    search.add_argument(
        "--max-trials", type=int, default=10, help="trials to run in all (default: 10)"
    )
    search.add_argument(
        "--epochs",
        type=flags.config_type(train_config.TrainConfig, "epochs"),
        help="epochs per trial, Hyperband's maximum (default: the train command's)",
    )
    search.add_argument(
        "--validation-split",
        type=flags.number_or_none,
        default=0.2,
        help="share of the training split that scores the trials, or 'none' to score "
        "them on --test-split (default: 0.2)",
    )
    search.add_argument(
        "--hyperband-factor", type=int, default=3, help="Hyperband's reduction factor"
    )
    search.add_argument(
        "--output-dir", help="the search's directory (default: runs/<dataset>_<model>_tuning)"
    )
    search.add_argument(
        "--overwrite", action="store_true", help="delete a previous search there and start over"
    )
    flags.add_config_flags(
        search, train_config.TrainConfig, names=("strategy", "tpu"), help=_TUNE_HELP
    )
    space = tune.add_argument_group("search space (default: the paper's ablations)")
    flags.add_space_flags(space, search_space.SearchSpace)
    fixed = tune.add_argument_group("data and model")
    flags.add_config_flags(fixed, train_config.TrainConfig, names=_TUNE_FIELDS, help=_TUNE_HELP)
    tune.set_defaults(run=_tune, check=_check_tune)


def _check_tune(args):
    _check_tpu(args)
    args.search_space = flags.space_values(args, search_space.SearchSpace)
    flags.check_space_bounds(args.search_space, train_config.TrainConfig)


@_out_of_memory_in_one_line
def _tune(args):
    from keras_sasa import training
    from keras_sasa import tuning

    space = tuning.SearchSpace(**args.search_space)
    # The search's own --epochs, --validation-split and --output-dir are not the config's.
    names = (*_TUNE_FIELDS, "strategy", "tpu")
    config = training.TrainConfig(**flags.config_values(args, training.TrainConfig, names))
    try:
        results = tuning.search(
            config, space, **{name: getattr(args, name) for name in _SEARCH_ARGUMENTS}
        )
    except RuntimeError as error:
        # keras-tuner gives up after consecutive failed trials; its message ends with
        # the last trial's traceback, whose last line is the error.
        lines = [line for line in str(error).splitlines() if line.strip()]
        raise flags.UsageError(f"The search stopped: {lines[0]} Last error: {lines[-1]}") from None
    output_dir = args.output_dir or tuning.default_output_dir(config)
    print()
    print(tuning.format_table(results))
    if results["best_score"] is not None:
        best = ", ".join(f"{k}={v!r}" for k, v in results["best_hyperparameters"].items())
        print(
            f"\nBest: trial {results['best_trial_id']}, {results['objective']} "
            f"{results['best_score']:.4f}: {best}"
        )
    print(f"\nResults: {os.path.join(output_dir, tuning.RESULTS_FILE)}")
