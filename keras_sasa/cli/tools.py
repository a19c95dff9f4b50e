"""The commands around the models: `summary` (the paper's tables beside ours), `bench`
(LocalSelfAttention2D's speed), `export` and `attention-map` (of a `.keras` file)."""

import argparse
import functools
import importlib.util
import os
import tempfile
import traceback

from keras_sasa.cli import flags
from keras_sasa.cli.flags import UsageError
from keras_sasa.cli.output import output_to

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
    return tuple(b for b in BACKENDS if importlib.util.find_spec(b) is not None)


def add_summary_parser(commands):
    summary = commands.add_parser(
        "summary", help="the paper's Tables 1 and 3 beside our parameter and FLOP counts"
    )
    summary.set_defaults(run=_summary)


def _summary(args):
    from keras_sasa.models.paper import paper_table

    print(paper_table())


def add_bench_parser(commands):
    bench = commands.add_parser(
        "bench", help="time LocalSelfAttention2D against its reference and Conv2D"
    )
    bench.add_argument("--quick", action="store_true", help="one small shape only")
    bench.add_argument("--no-jit", action="store_true", help="skip jit_compile=True")
    bench.add_argument("--no-models", action="store_true", help="skip the ResNet-26 comparison")
    bench.add_argument("--repeats", type=flags.positive_int, default=3)
    bench.add_argument(
        "--kernel-sizes",
        type=flags.int_list,
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
    bench.add_argument(
        "--accelerator",
        action="store_true",
        help="measure every visible GPU/TPU (TensorFlow and JAX; the CPU if none) at the four "
        "group shapes and a SASA-ResNet-26 step against conv; writes OUTPUT_DIR/<device>.md",
    )
    bench.add_argument("--output-dir", default="benchmark_results")
    _add_serving_arguments(bench)
    bench.set_defaults(run=_bench)


def _add_serving_arguments(bench):
    bench.add_argument(
        "--serving",
        action="store_true",
        help="latency of the exported SASA-ResNet-26 and its conv twin in ONNX Runtime, "
        "LiteRT and Keras predict_on_batch; writes OUTPUT_DIR/serving-*.json and .md "
        "(--quick: a one-block model at 16x16)",
    )
    bench.add_argument(
        "--sizes",
        type=flags.positive_int_list,
        default=None,
        help="--serving image sizes (default: 32,224)",
    )
    bench.add_argument(
        "--batches",
        type=flags.positive_int_list,
        default=None,
        help="--serving batches (default: 1,8)",
    )
    bench.add_argument(
        "--runs", type=flags.positive_int, default=None, help="--serving calls timed (default: 20)"
    )
    bench.add_argument(
        "--threads",
        type=flags.positive_int,
        default=None,
        help="--serving: CPU threads of each runtime (default: each runtime's own)",
    )


def _bench_serving(args):
    from keras_sasa import benchmark
    from keras_sasa import serving

    sizes = args.sizes or ((16,) if args.quick else (32, 224))
    batches = args.batches or ((1, 2) if args.quick else (1, 8))
    runs = args.runs or (3 if args.quick else 20)
    name = serving.result_name(sizes, batches, args.quick, args.threads)
    if args.threads is not None:
        serving.limit_threads(args.threads)
    os.makedirs(args.output_dir, exist_ok=True)
    # The exporters' words (C++ included) go to a log; the command prints its progress.
    with open(os.path.join(args.output_dir, f"{name}.log"), "w") as log:
        results = serving.run_serving(
            sizes,
            batches,
            runs,
            quick=args.quick,
            exporting=lambda: output_to(log),
            threads=args.threads,
        )
    machine = benchmark.machine_description()
    print(serving.write_serving(results, args.output_dir, name, machine, args.threads))


def _bench(args):
    from keras_sasa import benchmark

    import keras

    table = "--serving" if args.serving else "--accelerator" if args.accelerator else None
    if table and args.kernel_sizes:
        raise UsageError(f"--kernel-sizes chooses rows of the layer table, not of {table}.")
    if args.serving:
        _bench_serving(args)
        return
    if args.accelerator:
        # --quick: a tiny shape and model, which checks the command end to end in seconds.
        quick = {
            "shapes": [(2, 14, 32)],
            "model": ("conv", 32, 2),
            "model_options": {"base_width": 4, "num_heads": 2},
        }
        jit_modes = (False,) if args.no_jit else (False, True)
        from keras_sasa import benchmark_accelerators

        benchmark_accelerators.run_accelerators(
            args.output_dir,
            jit_modes=jit_modes,
            repeats=args.repeats,
            **(quick if args.quick else {}),
        )
        return
    os.makedirs(args.output_dir, exist_ok=True)
    jit_modes = (False,) if args.no_jit else (False, True)
    if keras.backend.backend() == "jax":
        jit_modes = (True,)  # JAX always compiles.
    configs = _configs_of_kernel_sizes(benchmark.default_configs(args.quick), args)
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


def _configs_of_kernel_sizes(configs, args):
    """The benchmark's `configs` of `--kernel-sizes` (all without it); a UsageError for a
    kernel size it does not measure (else the table would be empty)."""
    if not args.kernel_sizes:
        return configs
    measured = sorted({kernel_size for _, kernel_size, _ in configs})
    unknown = [k for k in args.kernel_sizes if k not in measured]
    if unknown:
        which = "bench --quick measures" if args.quick else "bench measures"
        raise UsageError(
            f"--kernel-sizes {','.join(map(str, args.kernel_sizes))}: {which} kernel sizes "
            f"{','.join(map(str, measured))} only, not {','.join(map(str, unknown))}."
        )
    return [c for c in configs if c[1] in args.kernel_sizes]


def _check_model_file(path):
    """A one-line UsageError unless `path` is a zip file, as `.keras` files are."""
    import zipfile

    if not os.path.isfile(path):
        raise UsageError(f"no such model file: {path}")
    if not zipfile.is_zipfile(path):
        raise UsageError(f"{path} is not a Keras model (expected a .keras file saved by Keras 3)")


def _load_model(path):
    """A `.keras` file as a model, or a one-line UsageError saying what the file is not."""
    _check_model_file(path)
    from keras_sasa.saving import load_model

    try:
        return load_model(path)
    except Exception as error:  # Keras raises many types for a corrupt archive.
        message = (str(error).strip().splitlines() or [type(error).__name__])[0]
        if not message.startswith(os.fspath(path)):  # load_model's own messages do.
            message = f"{path} is not a loadable Keras model: {message}"
        raise UsageError(message) from None


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
    exporters = {
        "saved_model": export.save_model,
        "onnx": export.to_onnx,
        "tflite": functools.partial(
            export.to_tflite,
            quantize=args.quantize,
            representative_images=_calibration_images(args, model),
        ),
    }
    _write_with_log(functools.partial(exporters[args.format], model, args.output), log_path)
    print(f"Wrote {args.format} {args.output}")


def _write_with_log(write, log_path):
    """Calls `write()` with this process's output sent to `log_path`, removed once it
    succeeded. The exporters and converters talk at length on stdout and stderr (from
    C++ too); their words, and the traceback of a failure, go to the log, and the
    command says one line naming it."""
    try:
        with output_to(log_path):
            try:
                write()
            except Exception:
                traceback.print_exc()
                raise
    except Exception as error:  # TensorFlow's own errors are none of the usual types.
        lines = str(error).strip().splitlines() or [type(error).__name__]
        kind = type(error) if isinstance(error, (ValueError, TypeError, OSError)) else ValueError
        raise kind(f"{lines[0]} (the exporter's log: {log_path})") from None
    os.remove(log_path)


# The suffix of the file each export format writes; saved_model writes a directory.
_EXPORT_SUFFIXES = {"onnx": ".onnx", "tflite": ".tflite"}


def _check_export_arguments(args):
    """What `export` can refuse before Keras starts: a missing model file, an --output
    that --format cannot be written to, --quantize outside TFLite, and int8 without
    images to calibrate on."""
    _check_model_file(args.model)
    if args.quantize is not None and args.format != "tflite":
        raise UsageError(f"--quantize applies to --format tflite only, not {args.format}.")
    _check_export_output(args.output, args.format)
    if args.quantize == "int8" and args.dataset is None:
        if _run_dataset(args.model) is None:
            raise UsageError(
                f"--quantize int8 needs --dataset NAME (its training images calibrate the "
                f"int8 ranges): {args.model} is not in a run directory (no results.json "
                f"beside it)."
            )


def _check_export_output(output, format_name):
    """A one-line UsageError for an --output that --format cannot be written to."""
    path = os.fspath(output)
    suffix = os.path.splitext(path.rstrip("/\\"))[1].lower()
    if format_name == "saved_model":
        if suffix in (*_EXPORT_SUFFIXES.values(), ".keras"):
            raise UsageError(
                f"--output {path} names a {suffix} file; --format saved_model writes a directory."
            )
        if os.path.exists(path) and not os.path.isdir(path):
            raise UsageError(
                f"--output {path} is a file; --format saved_model writes a directory: name "
                "a new or empty one."
            )
        if os.path.isdir(path) and os.listdir(path):
            raise UsageError(
                f"--output {path} is a directory that holds files; --format saved_model "
                "writes a new or empty directory."
            )
        return
    expected = _EXPORT_SUFFIXES[format_name]
    if suffix != expected:
        raise UsageError(
            f"--output {path} does not end in {expected}: --format {format_name} writes a "
            f"{expected} file."
        )
    if os.path.isdir(path):
        raise UsageError(f"--output {path} is a directory; --format {format_name} writes a file.")


def _run_dataset(model_path):
    """(dataset, data_dir) of the training run whose directory holds `model_path`
    (its results.json), or None."""
    import json

    results = os.path.join(os.path.dirname(os.path.abspath(model_path)), "results.json")
    try:
        with open(results) as f:
            run = json.load(f)
        return run["dataset"], run.get("config", {}).get("data_dir")
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _calibration_images(args, model):
    """The images `--quantize int8` calibrates on: --dataset's, else the run's."""
    if args.quantize != "int8":
        return None
    from keras_sasa import serving

    dataset, data_dir = (args.dataset, args.data_dir) if args.dataset else _run_dataset(args.model)
    return serving.calibration_images(
        dataset, tuple(model.inputs[0].shape[1:]), data_dir=args.data_dir or data_dir
    )


def _check_output_parent(output):
    """Creates the directory `--output` goes in; a UsageError naming `output` if it
    cannot be (else the first file to fail would be the exporter's log, beside it)."""
    parent = os.path.dirname(os.path.abspath(output))
    if os.path.isfile(parent):
        raise UsageError(f"Cannot write --output {output}: {parent} is a file, not a directory.")
    try:
        os.makedirs(parent, exist_ok=True)
        with tempfile.TemporaryFile(dir=parent):
            pass  # Writable (permissions alone do not tell: /proc, read-only mounts).
    except OSError as error:
        reason = error.strerror or str(error)
        raise UsageError(f"Cannot write --output {output}: {reason} ({parent}).") from None


def add_export_parser(commands):
    parser = commands.add_parser(
        "export",
        help="export a .keras model as a SavedModel, an ONNX file or a builtin-only TFLite file",
        description=(
            "Export a Keras model for serving. saved_model: model.export (TF Serving, "
            "tf.saved_model.load). onnx: model.export(format='onnx') for ONNX Runtime, any "
            'batch size (needs pip install "keras-sasa[onnx]"); attention layers on the '
            "extract_patches reference are exported with the blocked implementation. tflite: "
            "TFLite with the builtin op set only; the attention layers are converted with "
            "the blocked implementation and the same weights; --quantize dynamic stores "
            "int8 weights, --quantize int8 computes in int8 (calibrated on 200 training "
            "images of --dataset, by default the dataset of the run directory holding "
            "MODEL.keras). onnx and tflite need a fixed input height and width."
        ),
    )
    parser.add_argument("model", metavar="MODEL.keras")
    parser.add_argument("--format", required=True, choices=("saved_model", "onnx", "tflite"))
    parser.add_argument(
        "--output", required=True, help="SavedModel directory, .onnx or .tflite file to write"
    )
    _add_quantize_arguments(parser)
    parser.set_defaults(run=_export, check=_check_export_arguments)


def _add_quantize_arguments(parser):
    parser.add_argument(
        "--quantize",
        choices=("dynamic", "int8"),
        help="tflite post-training quantization: dynamic (int8 weights, float activations) "
        "or int8 (weights and activations, float input and output; calibrated on 200 "
        "training images of --dataset)",
    )
    parser.add_argument(
        "--dataset",
        help="data set whose training images calibrate --quantize int8 (default: the "
        "dataset of the run whose directory holds MODEL.keras)",
    )
    parser.add_argument("--data-dir", help="TFDS data directory of --dataset (default: TFDS's)")


def _attention_map(args):
    from keras_sasa import visualize

    model = _load_model(args.model)
    image = visualize.load_image(args.image, model)
    layer = args.layer or visualize.attention_layer_names(model)[0]
    if args.grid:
        figure = visualize.plot_attention_grid(model, image, layer, grid=args.grid)
    else:
        figure = visualize.plot_pixel_attention(model, image, layer, args.pixel)
    print(f"Wrote {visualize.save_figure(figure, args.output)}")


def _check_attention_map_arguments(args):
    _check_model_file(args.model)
    if args.grid is not None and args.pixel is not None:
        raise UsageError(
            "--grid and --pixel exclude each other: --pixel ROW COL draws one query pixel, "
            "--grid N a grid of them."
        )
    if os.path.isdir(args.output):
        raise UsageError(
            f"--output {args.output} is a directory; name the PNG file to write, e.g. "
            f"{os.path.join(args.output, 'attention.png')}."
        )


def add_attention_map_parser(commands):
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
        type=flags.positive_int,
        help="grid view of N x N query pixels; N is at most the side of the layer's "
        "feature map (its input), e.g. 8 for an 8 x 8 image at the first layer",
    )
    parser.add_argument(
        "--output", required=True, help="PNG file to write (.png is added to a name without one)"
    )
    parser.set_defaults(run=_attention_map, check=_check_attention_map_arguments)
