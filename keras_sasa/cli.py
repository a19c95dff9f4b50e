"""The command line: `python -m keras_sasa COMMAND ...`.

Commands: `train` (keras_sasa.training), `summary` (the paper's Tables 1 and 3 beside our
models), `bench` (LocalSelfAttention2D's speed). Each command is a function taking the
parsed arguments; `main` turns the errors a user can cause (bad values, missing files,
an unwritable output directory) into one line on stderr and a non-zero exit code.
"""

import argparse
import os
import sys


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
    )
    results = training.train(config)
    print()
    print(training.format_results(results))
    print(f"\nResults: {os.path.join(results['config']['output_dir'], 'results.json')}")


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
        help="'digits' or a TFDS image "
        "classification data set (default: digits, needs no download)",
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
        "attention, or attention_small for images <= 64 pixels)",
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
        default=7,
        help="spatial extent k of the attention (default: 7)",
    )
    model.add_argument(
        "--num-heads", type=_positive_int, help="attention heads (default: 8; 4 for small images)"
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


def _load_model(path):
    """A `.keras` file as a model, or a one-line UsageError saying what the file is not."""
    import zipfile

    if not os.path.isfile(path):
        raise UsageError(f"no such model file: {path}")
    if not zipfile.is_zipfile(path):
        raise UsageError(f"{path} is not a Keras model (expected a .keras file saved by Keras 3)")
    import keras

    import keras_sasa  # noqa: F401  (registers the layers for deserialisation)

    try:
        return keras.models.load_model(path)
    except Exception as error:  # Keras raises many types for a corrupt archive.
        raise UsageError(f"{path} is not a loadable Keras model: {error}") from None


def _export(args):
    from keras_sasa import export

    model = _load_model(args.model)
    if args.format == "saved_model":
        export.save_model(model, args.output)
    else:
        export.to_tflite(model, args.output)
    print(f"Wrote {args.format} {args.output}")


def _add_export_parser(commands):
    parser = commands.add_parser(
        "export",
        help="export a .keras model as a SavedModel or a builtin-only TFLite file",
        description=(
            "Export a Keras model for serving. saved_model: model.export (TF Serving, "
            "tf.saved_model.load). tflite: TFLite with the builtin op set only; the "
            "attention layers are converted with the unrolled implementation and the same "
            "weights, and the model's input needs a fixed height and width."
        ),
    )
    parser.add_argument("model", metavar="MODEL.keras")
    parser.add_argument("--format", required=True, choices=("saved_model", "tflite"))
    parser.add_argument(
        "--output", required=True, help="SavedModel directory or .tflite file to write"
    )
    parser.set_defaults(run=_export)


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
    parser.add_argument("--grid", type=_positive_int, help="grid view of N x N query pixels")
    parser.add_argument("--output", required=True, help="PNG file to write")
    parser.set_defaults(run=_attention_map)


def build_parser():
    parser = _Parser(
        prog="python -m keras_sasa",
        description="Stand-alone self-attention (Ramachandran et al. 2019) for Keras.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    _add_train_parser(commands)
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
    bench.add_argument("--output-dir", default="benchmark_results")
    bench.set_defaults(run=_bench)

    _add_export_parser(commands)
    _add_attention_map_parser(commands)
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args.run(args)
    except (UsageError, ValueError, TypeError, OSError) as error:
        message = " ".join(str(error).split())  # One line, whatever the message.
        print(f"error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0
