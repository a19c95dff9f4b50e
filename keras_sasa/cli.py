"""The command line: `python -m keras_sasa COMMAND ...`.

Commands: `train` (keras_sasa.training), `tune` (keras_sasa.tuning), `summary` (the
paper's Tables 1 and 3 beside our models), `bench` (LocalSelfAttention2D's speed),
`export` (keras_sasa.export) and `attention-map` (keras_sasa.visualize). Each
command is a function taking the parsed arguments; `main` turns the errors a user can
cause (bad values, missing files, an unwritable output directory) into one line on stderr
and a non-zero exit code.

The module imports nothing heavy: `--help` and mistakes in the arguments are answered
before Keras or TensorFlow is imported. TensorFlow's C++ start-up messages (oneDNN, CUDA
drivers, CPU instructions: a dozen lines before the first word of the command) are held
to the user's TF_CPP_MIN_LOG_LEVEL, or to errors where it is not set (`_start_tensorflow`).
"""

import argparse
import contextlib
import importlib.util
import json
import os
import re
import sys
import tempfile


class UsageError(Exception):
    """A mistake in the command line, reported as one line without a traceback."""


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line on stderr (no usage block)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


def _positive_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _non_negative_float(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text}")
    return value


def _positive_float(text):
    value = _non_negative_float(text)
    if value == 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text}")
    return value


def _int_list(text):
    try:
        return tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected integers separated by commas, got {text!r}"
        ) from None


BACKENDS = ("tensorflow", "jax")


def _backend_list(text):
    names = tuple(part.strip() for part in text.split(",") if part.strip())
    unknown = [n for n in names if n not in BACKENDS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"expected backends among {', '.join(BACKENDS)}, got {text!r}"
        )
    return names


def _default_backends():
    import importlib.util

    return tuple(b for b in BACKENDS if importlib.util.find_spec(b) is not None)


def _attention_stages(text):
    if text.strip().lower() in ("", "none"):
        return ()
    try:
        return tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected group numbers separated by commas (e.g. 2,3,4) or 'none', got {text!r}"
        ) from None


def _train(args):
    from keras_sasa import training

    config = training.TrainConfig(
        dataset=args.dataset,
        data_dir=args.data_dir,
        train_split=args.train_split,
        test_split=args.test_split,
        model=args.model,
        stem=None if args.stem == "auto" else args.stem,
        attention_stages=args.attention_stages,
        kernel_size=args.kernel_size,
        num_heads=args.num_heads,
        base_width=args.base_width,
        image_size=args.image_size,
        epochs=args.epochs,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        warmup_epochs=args.warmup_epochs,
        weight_decay=args.weight_decay,
        label_smoothing=args.label_smoothing,
        momentum=args.momentum,
        ema=args.ema,
        ema_momentum=args.ema_momentum,
        batch_norm_momentum=args.batch_norm_momentum,
        output_dir=args.output_dir,
        seed=args.seed,
        mixed_precision=args.mixed_precision,
        jit_compile="auto" if args.jit_compile is None else args.jit_compile,
        steps_per_execution=args.steps_per_execution or "auto",
        strategy=args.strategy,
        tpu=args.tpu,
        compare_baseline=args.compare_baseline,
        validation_split=args.validation_split,
    )
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


def _split_list(flag, text, convert):
    """ "3,5" -> (3, 5) with `convert` on each item; UsageError naming `flag` otherwise."""
    try:
        return tuple(convert(part.strip()) for part in text.split(",") if part.strip())
    except ValueError:
        raise UsageError(f"Invalid value for {flag}: cannot read {text!r}.") from None


def _on_off(text):
    values = {"on": True, "true": True, "off": False, "false": False}
    if text.lower() not in values:
        raise ValueError(text)
    return values[text.lower()]


def _range_arg(flag, text):
    """ "1e-3:1e-1" -> (0.001, 0.1); "0.05" -> 0.05 (fixed)."""
    try:
        parts = [float(part) for part in text.split(":")]
    except ValueError:
        raise UsageError(
            f"Invalid value for {flag}: expected MIN:MAX or a number, got {text!r}."
        ) from None
    if len(parts) > 2:
        raise UsageError(f"Invalid value for {flag}: expected MIN:MAX or a number, got {text!r}.")
    return parts[0] if len(parts) == 1 else tuple(parts)


def _search_space_values(args):
    """The tune command's search-space flags as SearchSpace arguments (nothing imported)."""
    space = {}
    if args.kernel_sizes is not None:
        space["kernel_size"] = _split_list("--kernel-sizes", args.kernel_sizes, int)
    if args.num_heads is not None:
        space["num_heads"] = _split_list("--num-heads", args.num_heads, int)
    if args.stems is not None:
        space["stem"] = _split_list("--stems", args.stems, str)
    if args.attention_stages is not None:
        sets = [part.strip() for part in args.attention_stages.split(";") if part.strip()]
        space["attention_stages"] = tuple(
            _attention_stages_or_error("--attention-stages", part) for part in sets
        )
    if args.relative_position is not None:
        space["use_relative_position"] = _split_list(
            "--relative-position", args.relative_position, _on_off
        )
    if args.base_widths is not None:
        space["base_width"] = _split_list("--base-widths", args.base_widths, int)
    for name in ("learning_rate", "weight_decay", "label_smoothing"):
        text = getattr(args, name)
        if text is not None:
            space[name] = _range_arg("--" + name.replace("_", "-"), text)
    return space


def _check_tune(args):
    args.search_space = _search_space_values(args)


def _attention_stages_or_error(flag, text):
    try:
        return _attention_stages(text)
    except argparse.ArgumentTypeError as error:
        raise UsageError(f"Invalid value for {flag}: {error}.") from None


def _seed_list(text):
    try:
        seeds = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected integers like 0,1,2, got {text!r}") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise argparse.ArgumentTypeError(f"expected distinct integers like 0,1,2, got {text!r}")
    return tuple(seeds)


def _validation_split(text):
    if text.strip().lower() == "none":
        return None
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or 'none', got {text!r}") from None


def _tune(args):
    from keras_sasa import training
    from keras_sasa import tuning

    space = tuning.SearchSpace(**args.search_space)
    config = training.TrainConfig(
        dataset=args.dataset,
        data_dir=args.data_dir,
        train_split=args.train_split,
        test_split=args.test_split,
        image_size=args.image_size,
        model=args.model,
        batch_size=args.batch_size,
        seed=args.seed,
        strategy=args.strategy,
        tpu=args.tpu,
    )
    try:
        results = tuning.search(
            config,
            space,
            tuner=args.tuner,
            max_trials=args.max_trials,
            epochs=args.epochs,
            output_dir=args.output_dir,
            validation_split=args.validation_split,
            overwrite=args.overwrite,
            hyperband_factor=args.hyperband_factor,
        )
    except RuntimeError as error:
        # keras-tuner gives up after consecutive failed trials; its message ends with
        # the last trial's traceback, whose last line is the error.
        lines = [line for line in str(error).splitlines() if line.strip()]
        raise UsageError(f"The search stopped: {lines[0]} Last error: {lines[-1]}") from None
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


def _add_tune_parser(commands):
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
        type=int,
        help="epochs per trial, Hyperband's maximum (default: the train command's)",
    )
    search.add_argument(
        "--validation-split",
        type=_validation_split,
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
    search.add_argument(
        "--strategy",
        default="auto",
        choices=("auto", "default", "mirrored", "multi_worker", "tpu"),
        help="tf.distribute strategy of the trials (default: auto)",
    )
    search.add_argument("--tpu", help="TPU name or grpc:// address ('local' on a TPU VM)")

    space = tune.add_argument_group("search space (default: the paper's ablations)")
    space.add_argument("--kernel-sizes", metavar="K,...", help="default: 3,5,7,9,11")
    space.add_argument("--num-heads", metavar="N,...", help="default: 1,2,4,8")
    space.add_argument(
        "--stems",
        metavar="STEM,...",
        help="default: attention_small,conv_small (<= 64 pixels), else attention,conv",
    )
    space.add_argument(
        "--attention-stages",
        metavar="GROUPS;...",
        help="sets of groups using attention, separated by ';' (e.g. '1,2,3,4;2,3,4;none'; "
        "default: 1,2,3,4;2,3,4;3,4;4)",
    )
    space.add_argument(
        "--relative-position", metavar="on,off", help="positional encoding (default: on,off)"
    )
    space.add_argument("--base-widths", metavar="W,...", help="default: 16,32,64")
    space.add_argument(
        "--learning-rate",
        metavar="MIN:MAX",
        help="default: 1/4 to 4 times 0.1 x batch size / 256",
    )
    space.add_argument("--weight-decay", metavar="MIN:MAX", help="default: 0:0.001")
    space.add_argument("--label-smoothing", metavar="MIN:MAX", help="default: 0:0.2")

    fixed = tune.add_argument_group("data and model")
    fixed.add_argument(
        "--dataset",
        default="digits",
        help="'digits' (default, offline), a TFDS data set or a folder of class subfolders",
    )
    fixed.add_argument("--data-dir", help="TFDS data directory (default: TFDS's)")
    fixed.add_argument("--train-split", help="default: the training split")
    fixed.add_argument("--test-split", help="scores the trials with --validation-split none")
    fixed.add_argument("--image-size", type=_positive_int, help="side of the model input")
    fixed.add_argument("--model", default="sasa_resnet26", help="default: sasa_resnet26")
    fixed.add_argument("--batch-size", type=_positive_int, help="global batch size")
    fixed.add_argument("--seed", type=int, default=0, help="default: 0")
    tune.set_defaults(run=_tune, check=_check_tune)


def _summary(args):
    from keras_sasa.models.paper import paper_table

    print(paper_table())


def _add_train_parser(commands):
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
    data = train.add_argument_group("data")
    data.add_argument(
        "--dataset",
        default="digits",
        help="'digits', a TFDS image classification data set, or a folder of images with "
        "one subfolder per class (default: digits, needs no download)",
    )
    data.add_argument("--data-dir", help="TFDS data directory (default: TFDS's)")
    data.add_argument(
        "--train-split",
        help="TFDS split to train on, slices allowed "
        "(e.g. 'train[:256]'; default: the training split)",
    )
    data.add_argument(
        "--test-split",
        help="TFDS split to evaluate on (default: the labelled test or validation split)",
    )
    data.add_argument(
        "--image-size",
        type=_positive_int,
        help="side of the model input (default: native for images <= 64 pixels, else 224)",
    )

    model = train.add_argument_group("model")
    model.add_argument(
        "--model",
        default="sasa_resnet26",
        help="sasa_resnet26|38|50|101|152 (default: sasa_resnet26)",
    )
    model.add_argument(
        "--stem",
        default="auto",
        help="auto|attention|conv|attention_small|conv_small (default: auto: "
        "attention, or conv_small for images <= 64 pixels)",
    )
    model.add_argument(
        "--attention-stages",
        type=_attention_stages,
        metavar="GROUPS",
        help="groups using attention, e.g. 2,3,4 or none (default: 1,2,3,4)",
    )
    model.add_argument(
        "--kernel-size",
        type=_positive_int,
        help="spatial extent k of the attention (default: 7)",
    )
    model.add_argument(
        "--num-heads", type=_positive_int, help="attention heads (default: 8; 2 for small images)"
    )
    model.add_argument(
        "--base-width",
        type=_positive_int,
        help="width of the stem and group 1 (default: 64; 16 for small images)",
    )

    fit = train.add_argument_group("recipe")
    fit.add_argument(
        "--epochs", type=_positive_int, help="default: 130 (paper); 30 for small images"
    )
    fit.add_argument(
        "--batch-size",
        type=_positive_int,
        help="global batch size (default: 256; 64 for small images)",
    )
    fit.add_argument(
        "--learning-rate",
        type=_positive_float,
        help="peak learning rate (default: 0.1 x batch size / 256)",
    )
    fit.add_argument(
        "--warmup-epochs",
        type=_non_negative_float,
        help="linear warm-up (default: 10/130 of the epochs, as in the paper)",
    )
    fit.add_argument(
        "--weight-decay",
        type=_non_negative_float,
        default=0.0,
        help="decoupled weight decay of SGD (default: 0)",
    )
    fit.add_argument(
        "--label-smoothing",
        type=_non_negative_float,
        default=0.0,
        help="label smoothing (default: 0)",
    )
    fit.add_argument(
        "--momentum", type=_non_negative_float, default=0.9, help="Nesterov momentum (default: 0.9)"
    )
    fit.add_argument(
        "--ema",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="keep and evaluate an EMA of the weights (default: on)",
    )
    fit.add_argument(
        "--ema-momentum",
        type=_non_negative_float,
        help="EMA decay (default: 0.9999, less for short runs)",
    )
    fit.add_argument(
        "--batch-norm-momentum",
        type=_non_negative_float,
        help="momentum of batch norm's moving statistics (default: 0.9999, less for short runs)",
    )
    fit.add_argument("--seed", type=int, default=0, help="default: 0")
    fit.add_argument(
        "--seeds",
        type=_seed_list,
        metavar="S,...",
        help="train once per seed, each in OUTPUT_DIR/seed_S, and report the mean and "
        "standard deviation (e.g. 0,1,2; replaces --seed)",
    )
    fit.add_argument(
        "--validation-split",
        type=_validation_split,
        default=None,
        help="share of the training split held out for the per-epoch val_* columns, "
        "e.g. 0.1 (default: none: val_* is computed on the test split)",
    )

    run = train.add_argument_group("run")
    run.add_argument(
        "--output-dir",
        help="results, history, logs, checkpoints, model (default: runs/<dataset>_<model>)",
    )
    run.add_argument(
        "--compare-baseline",
        action="store_true",
        help="also train the conv baseline of the same depth (in "
        "OUTPUT_DIR/baseline) and print both side by side",
    )
    run.add_argument(
        "--mixed-precision", default="none", choices=("none", "mixed_float16", "mixed_bfloat16")
    )
    run.add_argument(
        "--jit-compile",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="XLA (default: Keras' choice: on for GPUs, off on CPUs)",
    )
    run.add_argument(
        "--steps-per-execution",
        type=_positive_int,
        help="training steps per compiled call (default: 1; 32 on TPUs)",
    )
    run.add_argument(
        "--strategy",
        default="auto",
        choices=("auto", "default", "mirrored", "multi_worker", "tpu"),
        help="tf.distribute strategy (default: auto)",
    )
    run.add_argument("--tpu", help="TPU name or grpc:// address ('local' on a TPU VM)")
    train.set_defaults(run=_train)


def _bench(args):
    from keras_sasa import benchmark

    import keras

    os.makedirs(args.output_dir, exist_ok=True)
    jit_modes = (False,) if args.no_jit else (False, True)
    if keras.backend.backend() == "jax":
        jit_modes = (True,)  # JAX always compiles.
    configs = benchmark.default_configs(args.quick)
    if args.kernel_sizes:
        configs = [c for c in configs if c[1] in args.kernel_sizes]
    results = benchmark.run(configs, jit_modes, args.repeats)
    others = [b for b in args.backends if b != keras.backend.backend()]
    for backend in others:
        results += benchmark.run_in_backend(backend, configs, args.repeats)
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


# Commands that import TensorFlow whatever the Keras backend (tf.data, tf.distribute, the
# exporters, the benchmark); the others import it only through Keras's TensorFlow backend.
_TENSORFLOW_COMMANDS = ("train", "tune", "bench", "export")


def _keras_backend():
    """The backend Keras will load, read as Keras reads it, without importing Keras."""
    if os.environ.get("KERAS_BACKEND"):
        return os.environ["KERAS_BACKEND"]
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    try:
        with open(os.path.join(home, "keras.json")) as f:
            return json.load(f).get("backend", "tensorflow")
    except (OSError, ValueError, AttributeError):
        return "tensorflow"


# What TensorFlow's C++ side writes while it starts: absl's note that logs go to stderr
# before absl is initialised, then lines "I0000 00:00:..." (oneDNN, CUDA drivers, CPU
# instructions), some with continuation lines. TF_CPP_MIN_LOG_LEVEL does not reach these
# early lines (absl is not initialised yet), so they are filtered here by their severity.
_ABSL_LINE = re.compile(r"[IWEF]\d{4} \d\d:\d\d:\d\d")
_ABSL_PREAMBLE = "WARNING: All log messages before absl::InitializeLog() is called"
_SEVERITIES = "IWEF"  # TF_CPP_MIN_LOG_LEVEL 0..3 keeps these and the ones after.


def _start_tensorflow():
    """Imports TensorFlow and lists its devices with its start-up lines held to a log level.

    The level is the user's TF_CPP_MIN_LOG_LEVEL where they set it (0 shows everything),
    else 2 (errors only), set for the rest of the run too; then cuInit's error where there
    is no usable CUDA driver (TensorFlow runs on the CPU) is dropped as well. The lines
    TensorFlow writes to stderr while it starts are caught; those at or above the level,
    and anything else (a Python warning), are written to stderr as they came.
    """
    if "tensorflow" in sys.modules or importlib.util.find_spec("tensorflow") is None:
        return
    user_level = os.environ.get("TF_CPP_MIN_LOG_LEVEL")
    if user_level is None:
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
    try:
        level = int(os.environ["TF_CPP_MIN_LOG_LEVEL"])
    except ValueError:
        level = 0  # TensorFlow reads a value it cannot parse as 0.
    with tempfile.TemporaryFile("w+") as caught:
        with _output_to(caught, fds=(2,)):
            import tensorflow as tf

            tf.config.list_physical_devices("GPU")  # CUDA's start-up (cuInit) speaks here.
        caught.seek(0)
        keep = True
        for line in caught.read().splitlines():
            if line.startswith(_ABSL_PREAMBLE):
                if level >= 1:  # A warning.
                    continue
            elif _ABSL_LINE.match(line):  # Its continuation lines go with it.
                keep = _SEVERITIES.index(line[0]) >= level and not (
                    user_level is None and "failed call to cuInit" in line
                )
            if keep:
                print(line, file=sys.stderr)


def _check_model_file(path):
    """A one-line UsageError unless `path` is a zip file, as `.keras` files are."""
    import zipfile

    if not os.path.isfile(path):
        raise UsageError(f"no such model file: {path}")
    if not zipfile.is_zipfile(path):
        raise UsageError(f"{path} is not a Keras model (expected a .keras file saved by Keras 3)")


def _check_model_argument(args):
    _check_model_file(args.model)


def _load_model(path):
    """A `.keras` file as a model, or a one-line UsageError saying what the file is not."""
    _check_model_file(path)
    import keras

    import keras_sasa.layers  # noqa: F401  (registers the layers for deserialisation)

    try:
        return keras.models.load_model(path)
    except Exception as error:  # Keras raises many types for a corrupt archive.
        raise UsageError(f"{path} is not a loadable Keras model: {error}") from None


def _export(args):
    from keras_sasa import export

    if args.format == "onnx":
        try:
            export.require_onnx()
        except ImportError as error:
            raise UsageError(str(error)) from None
    model = _load_model(args.model)
    _check_output_parent(args.output)
    log_path = os.fspath(args.output).rstrip("/\\") + ".log"
    try:
        # The exporter and the converter talk at length on stdout and stderr (from C++
        # too); their words go to a log, and the command says one line.
        with _output_to(log_path):
            if args.format == "saved_model":
                export.save_model(model, args.output)
            elif args.format == "onnx":
                export.to_onnx(model, args.output)
            else:
                export.to_tflite(model, args.output)
    except (ValueError, TypeError, OSError) as error:
        raise type(error)(f"{error} (the exporter's log: {log_path})") from None
    os.remove(log_path)
    print(f"Wrote {args.format} {args.output}")


def _check_output_parent(output):
    """Creates the directory `--output` goes in; a UsageError naming `output` if it
    cannot be (else the first file to fail would be the exporter's log, beside it)."""
    parent = os.path.dirname(os.path.abspath(output))
    if os.path.isfile(parent):
        raise UsageError(f"Cannot write --output {output}: {parent} is a file, not a directory.")
    try:
        os.makedirs(parent, exist_ok=True)
    except OSError as error:
        reason = error.strerror or str(error)
        raise UsageError(f"Cannot write --output {output}: {reason} ({parent}).") from None


@contextlib.contextmanager
def _output_to(target, fds=(1, 2)):
    """Sends this process's file descriptors `fds` (stdout 1, stderr 2) to `target`.

    `target` is a path (written anew) or an open file. File descriptors, not sys.stdout
    and sys.stderr, so that what C++ code writes is caught too.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(fd) for fd in fds]
    try:
        with contextlib.ExitStack() as stack:
            log = target if hasattr(target, "fileno") else stack.enter_context(open(target, "w"))
            for fd in fds:
                os.dup2(log.fileno(), fd)
            try:
                yield
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                for fd, copy in zip(fds, saved):
                    os.dup2(copy, fd)
    finally:
        for copy in saved:
            os.close(copy)


def _add_export_parser(commands):
    parser = commands.add_parser(
        "export",
        help="export a .keras model as a SavedModel, an ONNX file or a builtin-only TFLite file",
        description=(
            "Export a Keras model for serving. saved_model: model.export (TF Serving, "
            "tf.saved_model.load). onnx: model.export(format='onnx') for ONNX Runtime, any "
            "batch size (needs pip install \"keras-sasa[onnx]\"); attention layers on the "
            "extract_patches reference are exported with the blocked implementation. tflite: "
            "TFLite with the builtin op set only; the attention layers are converted with "
            "the unrolled implementation and the same weights. onnx and tflite need a "
            "fixed input height and width."
        ),
    )
    parser.add_argument("model", metavar="MODEL.keras")
    parser.add_argument("--format", required=True, choices=("saved_model", "onnx", "tflite"))
    parser.add_argument(
        "--output", required=True, help="SavedModel directory, .onnx or .tflite file to write"
    )
    parser.set_defaults(run=_export, check=_check_model_argument)


def _attention_map(args):
    from keras_sasa import visualize

    model = _load_model(args.model)
    image = visualize.load_image(args.image, model)
    layer = args.layer or visualize.attention_layer_names(model)[0]
    if args.grid:
        figure = visualize.plot_attention_grid(model, image, layer, grid=args.grid)
    else:
        figure = visualize.plot_pixel_attention(model, image, layer, args.pixel)
    visualize.save_figure(figure, args.output)
    print(f"Wrote {args.output}")


def _add_attention_map_parser(commands):
    parser = commands.add_parser(
        "attention-map",
        help="draw where a LocalSelfAttention2D layer looks for one pixel, or across the image",
        description=(
            "Draw a LocalSelfAttention2D layer's attention on an image: for the query pixel "
            "--pixel ROW COL (image coordinates, default the centre) each head's weights over "
            "its window and their mean; with --grid N, the mean weights of N x N query pixels "
            "spread over the image. IMAGE: .png/.jpg (scaled to 0..1) or .npy (integers "
            "scaled to 0..1, floats as they are), resized to the model's input size."
        ),
    )
    parser.add_argument("model", metavar="MODEL.keras")
    parser.add_argument("image", metavar="IMAGE")
    parser.add_argument("--layer", help="attention layer name (default: the first one)")
    parser.add_argument("--pixel", type=int, nargs=2, metavar=("ROW", "COL"))
    parser.add_argument(
        "--grid",
        type=_positive_int,
        help="grid view of N x N query pixels; N is at most the side of the layer's "
        "feature map (its input), e.g. 8 for an 8 x 8 image at the first layer",
    )
    parser.add_argument("--output", required=True, help="PNG file to write")
    parser.set_defaults(run=_attention_map, check=_check_model_argument)


def build_parser():
    parser = _Parser(
        prog="python -m keras_sasa",
        description="Stand-alone self-attention (Ramachandran et al. 2019) for Keras.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    _add_train_parser(commands)
    _add_tune_parser(commands)
    summary = commands.add_parser(
        "summary", help="the paper's Tables 1 and 3 beside our parameter and FLOP counts"
    )
    summary.set_defaults(run=_summary)

    bench = commands.add_parser(
        "bench", help="time LocalSelfAttention2D against its reference and Conv2D"
    )
    bench.add_argument("--quick", action="store_true", help="one small shape only")
    bench.add_argument("--no-jit", action="store_true", help="skip jit_compile=True")
    bench.add_argument("--no-models", action="store_true", help="skip the ResNet-26 comparison")
    bench.add_argument("--repeats", type=_positive_int, default=3)
    bench.add_argument(
        "--kernel-sizes",
        type=_int_list,
        default=None,
        help="only these kernel sizes, e.g. 7 or 3,7 (default: all)",
    )
    bench.add_argument(
        "--backends",
        type=_backend_list,
        default=_default_backends(),
        help="Keras backends to measure, e.g. tensorflow,jax (default: tensorflow, and jax "
        "if it is installed); the others than KERAS_BACKEND run in a subprocess",
    )
    bench.add_argument("--output-dir", default="benchmark_results")
    bench.set_defaults(run=_bench)

    _add_export_parser(commands)
    _add_attention_map_parser(commands)
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)  # Before any heavy import: --help, bad values.
    try:
        if hasattr(args, "check"):  # What a command can check before the heavy imports.
            args.check(args)
        if args.command in _TENSORFLOW_COMMANDS or _keras_backend() == "tensorflow":
            _start_tensorflow()
        args.run(args)
    except (UsageError, ValueError, TypeError, OSError) as error:
        message = " ".join(str(error).split())  # One line, whatever the message.
        print(f"error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0
