"""Trace time of the first training step: SASA-ResNet-26 against its conv twin.

    python benchmarks/trace_time.py [--models main_job conv_stem_224] [--repeats 3]

For each model, each variant (SASA, and the conv twin `training.baseline` gives: same
stem, no attention) runs in a fresh process, built and compiled as `train` builds and
compiles it (`training.build_model`, `training.compile_model`: optimizer built before the
first step, no XLA). The process times its first `train_on_batch` and the median of the
later ones; trace time = first step - later step (tracing, graph optimisation and the
first run's allocations), in wall time and in the process's CPU time (all threads), which
other jobs on a shared CPU disturb far less. The variants alternate, SASA then conv,
`--repeats` times, and the medians are reported.

Models:
- main_job: the `train` command's model on digits (the small-image defaults,
  `SMALL_IMAGE_DEFAULTS`): 8x8x1, conv_small stem, width 16, k=3, 2 heads, batch 64.
- conv_stem_224: 224x224x3, 1000 classes, the conv stem and the large-image defaults
  (width 64, k=7, 8 heads), batch 2 (small, to keep the later steps quick).

Also counted (in this process, TensorFlow graph): the ops of the model's first attention
layer, forward and forward + backward, at its input shape with the batch static (as
`fit` sees it on the training pipeline, whose last partial batch is dropped): total,
constants, reshapes, transposes.

With `--breakdown`, each process also says where its trace time goes: the Python
tracing of the training step (timed on a second trace of `model.train_step` after the
measured steps, wall and thread CPU time; the first trace's is about the same), the graph
optimisation of the first step's function (TensorFlow's grappler, the sum of the pass times
it logs with TF_CPP_VMODULE=meta_optimizer=1), and the rest of the trace time (the first
run: placement, kernel creation, allocations); and the train function's graph ops and the
first step's minor page faults. `--layers-only` counts the first attention layer's ops and
times the Python tracing of each attention layer's forward + backward on its own (thread
CPU time, median of 5 traces, summed over the layers), and stops there.

Writes benchmarks/results/trace_time_<model>[_<tag>].json.
"""

import argparse
import collections
import datetime
import json
import os
import platform
import re
import statistics
import subprocess
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

HERE = os.path.dirname(os.path.abspath(__file__))
MODELS = ("main_job", "conv_stem_224")
VARIANTS = ("sasa", "conv")


def _config(model):
    """The resolved `TrainConfig` and the data set description of `model`."""
    from keras_sasa import data
    from keras_sasa import training

    if model == "main_job":
        info = data.dataset_info("digits")
        config = training.TrainConfig(dataset="digits")
    else:
        info = data.ImageDatasetInfo(
            name="imagenet-like",
            tfds_name="imagenet2012",
            image_shape=(None, None, 3),
            num_classes=1000,
            class_names=tuple(str(i) for i in range(1000)),
            splits={},
            train_split="train",
            eval_split="validation",
            flip=True,
        )
        config = training.TrainConfig(
            dataset="imagenet-like", image_size=224, stem="conv", batch_size=2
        )
    return training.resolve(config, info), info


def child(model, variant, later_steps, breakdown=False):
    """One fresh process: the first and later step times of one model, as JSON."""
    import resource
    import time

    import numpy as np

    from keras_sasa import training

    config, info = _config(model)
    if variant == "conv":
        config = training.baseline(config)
    steps_per_epoch = 100
    config = training.with_run_length(config, steps_per_epoch)
    model = training.build_model(config, info)
    training.compile_model(model, config, steps_per_epoch)
    rng = np.random.default_rng(0)
    shape = (config.batch_size, config.image_size, config.image_size, info.image_shape[2])
    x = rng.random(shape, dtype="float32")
    y = np.eye(info.num_classes, dtype="float32")[np.arange(config.batch_size) % 10]

    def step():
        wall, cpu = time.perf_counter(), time.process_time()
        model.train_on_batch(x, y)
        return time.perf_counter() - wall, time.process_time() - cpu

    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    first, first_cpu = step()
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
    later_steps = [step() for _ in range(later_steps)]
    later, later_cpu = (statistics.median(t) for t in zip(*later_steps, strict=True))
    times = {
        "first_step_s": first,
        "later_step_s": later,
        "trace_s": first - later,
        "first_step_cpu_s": first_cpu,
        "later_step_cpu_s": later_cpu,
        "trace_cpu_s": first_cpu - later_cpu,
    }
    if breakdown:
        times.update(_python_tracing(model, x, y))
        times["first_step_minor_faults"] = faults
    print(json.dumps(times))


def _python_tracing(model, x, y):
    """The Python tracing of `model`'s training step, traced again, and its graph ops."""
    import time

    import tensorflow as tf

    data = (tf.constant(x), tf.constant(y))
    wall, thread = time.perf_counter(), time.thread_time()
    graph = tf.function(model.train_step).get_concrete_function(data).graph
    return {
        "python_tracing_s": time.perf_counter() - wall,
        "python_tracing_thread_cpu_s": time.thread_time() - thread,
        "train_graph_ops": len(graph.get_operations()),
    }


_GRAPPLER_ITEM = re.compile(
    r"meta_optimizer\.cc:\d+\] Starting optimization for grappler item: (\S+)"
)
_GRAPPLER_PASS = re.compile(r"meta_optimizer\.cc:\d+\] .*time = ([0-9.]+)ms\.")


def _graph_optimisation_s(log):
    """Grappler's pass times, summed, for the first step's function (`one_step_on_data`)."""
    total, item = 0.0, None
    for line in log.splitlines():
        started = _GRAPPLER_ITEM.search(line)
        if started:
            if item is not None and "one_step_on_data" in item:
                break
            item = started.group(1)
            continue
        timed = _GRAPPLER_PASS.search(line)
        if timed and item is not None and "one_step_on_data" in item:
            total += float(timed.group(1)) / 1e3
    return total


def layer_ops(model):
    """Graph ops of the model's first attention layer, forward and forward + backward."""
    import tensorflow as tf

    from keras_sasa import layers
    from keras_sasa import training

    config, info = _config(model)
    built = training.build_model(config, info)
    attention = next(
        layer for layer in built.layers if isinstance(layer, layers.LocalSelfAttention2D)
    )
    shape = (config.batch_size, *attention.input.shape[1:])
    layer = layers.LocalSelfAttention2D.from_config(attention.get_config())
    layer.build(shape)

    # training=True: the graph `fit` traces (inference runs another mask, see
    # ops.blocked.local_attention_blocked).
    def forward_backward(x):
        with tf.GradientTape() as tape:
            y = layer(x, training=True)
            loss = tf.reduce_sum(y * y)
        return tape.gradient(loss, layer.trainable_weights)

    spec = tf.TensorSpec(shape)
    forward = tf.function(lambda x: layer(x, training=True))
    forward = forward.get_concrete_function(spec).graph.get_operations()
    both = tf.function(forward_backward).get_concrete_function(spec).graph.get_operations()
    kinds = collections.Counter(op.type for op in both)
    return {
        "attention_layers_tracing_s": _attention_layers_tracing_s(built, config.batch_size),
        "layer_input_shape": list(shape),
        "kernel_size": layer.kernel_size,
        "num_heads": layer.num_heads,
        "forward": len(forward),
        "forward_backward": len(both),
        "constants": kinds["Const"],
        "reshapes": kinds["Reshape"],
        "transposes": kinds["Transpose"],
        "most_common": kinds.most_common(8),
    }


def _attention_layers_tracing_s(model, batch_size, repeats=5):
    """Python tracing of the forward + backward of each attention layer of `model` on
    its own (thread CPU time, median of `repeats` traces), summed over the layers."""
    import time

    import tensorflow as tf

    from keras_sasa import layers

    total = 0.0
    for attention in model.layers:
        if not isinstance(attention, layers.LocalSelfAttention2D):
            continue
        shape = (batch_size, *attention.input.shape[1:])
        layer = layers.LocalSelfAttention2D.from_config(attention.get_config())
        layer.build(shape)

        def forward_backward(x, layer=layer):
            with tf.GradientTape() as tape:
                tape.watch(x)
                y = layer(x, training=True)
            return tape.gradient(y, [x, *layer.trainable_weights], output_gradients=y)

        times = []
        for _ in range(repeats):
            start = time.thread_time()
            tf.function(forward_backward).get_concrete_function(tf.TensorSpec(shape))
            times.append(time.thread_time() - start)
        total += statistics.median(times)
    return total


def _run_child(model, variant, later_steps, breakdown=False):
    env = dict(os.environ)
    if breakdown:
        env.update(TF_CPP_VMODULE="meta_optimizer=1", TF_CPP_MIN_LOG_LEVEL="0")
    out = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "--child", model, variant,
         "--later-steps", str(later_steps)] + (["--breakdown"] if breakdown else []),
        capture_output=True, text=True, env=env,
    )  # fmt: skip
    if out.returncode:
        sys.exit(f"{model} {variant} failed:\n{out.stderr[-3000:]}")
    times = json.loads(out.stdout.strip().splitlines()[-1])
    if breakdown:
        times["graph_optimisation_s"] = _graph_optimisation_s(out.stderr)
        times["rest_s"] = (
            times["trace_s"] - times["python_tracing_s"] - times["graph_optimisation_s"]
        )
    return times


def _machine():
    import keras
    import tensorflow as tf

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "tensorflow": tf.__version__,
            "keras": keras.__version__}  # fmt: skip


def measure(model, repeats, later_steps, breakdown=False):
    runs = {variant: [] for variant in VARIANTS}
    for _ in range(repeats):
        for variant in VARIANTS:
            runs[variant].append(_run_child(model, variant, later_steps, breakdown))
            last = runs[variant][-1]
            print(
                f"{model} {variant}: first step {last['first_step_s']:.2f} s, later "
                f"{1e3 * last['later_step_s']:.0f} ms, trace {last['trace_s']:.2f} s "
                f"(CPU time {last['trace_cpu_s']:.2f} s)",
                flush=True,
            )
            if breakdown:
                print(
                    f"  Python tracing {last['python_tracing_s']:.2f} s (thread CPU "
                    f"{last['python_tracing_thread_cpu_s']:.2f} s), graph optimisation "
                    f"{last['graph_optimisation_s']:.2f} s, rest {last['rest_s']:.2f} s; "
                    f"{last['train_graph_ops']} graph ops, "
                    f"{last['first_step_minor_faults']} minor page faults",
                    flush=True,
                )
    medians = {
        variant: {
            key: statistics.median(run[key] for run in runs[variant]) for key in runs[variant][0]
        }
        for variant in VARIANTS
    }
    return runs, medians


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    parser.add_argument("--repeats", type=int, default=3, help="fresh processes per variant")
    parser.add_argument("--later-steps", type=int, default=5, help="steps after the first")
    parser.add_argument("--tag", default="", help="suffix of the result files' names")
    parser.add_argument("--out", default=os.path.join(HERE, "results"), help="results folder")
    parser.add_argument(
        "--breakdown",
        action="store_true",
        help="also time Python tracing and graph optimisation (see the module docstring)",
    )
    parser.add_argument(
        "--layers-only",
        action="store_true",
        help="only count and trace the attention layers (no training steps, no file)",
    )
    parser.add_argument("--child", nargs=2, metavar=("MODEL", "VARIANT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child, args.later_steps, args.breakdown)
        return
    for model in args.models:
        started = datetime.datetime.now(datetime.timezone.utc)
        ops = layer_ops(model)
        print(
            f"{model}: first attention layer {ops['forward']} ops forward, "
            f"{ops['forward_backward']} forward + backward ({ops['constants']} constants, "
            f"{ops['reshapes']} reshapes, {ops['transposes']} transposes); Python tracing "
            f"of the attention layers' forward + backward, each on its own: "
            f"{ops['attention_layers_tracing_s']:.2f} s (thread CPU, summed medians)",
            flush=True,
        )
        if args.layers_only:
            continue
        runs, medians = measure(model, args.repeats, args.later_steps, args.breakdown)
        ratio = medians["sasa"]["trace_s"] / medians["conv"]["trace_s"]
        cpu_ratio = medians["sasa"]["trace_cpu_s"] / medians["conv"]["trace_cpu_s"]
        print(
            f"{model}: trace time SASA {medians['sasa']['trace_s']:.2f} s, conv "
            f"{medians['conv']['trace_s']:.2f} s, ratio {ratio:.2f}; CPU time SASA "
            f"{medians['sasa']['trace_cpu_s']:.2f} s, conv {medians['conv']['trace_cpu_s']:.2f} "
            f"s, ratio {cpu_ratio:.2f} (medians of {args.repeats})",
            flush=True,
        )
        if args.breakdown:
            for variant in VARIANTS:
                m = medians[variant]
                print(
                    f"{model} {variant}: Python tracing {m['python_tracing_s']:.2f} s, graph "
                    f"optimisation {m['graph_optimisation_s']:.2f} s, rest {m['rest_s']:.2f} s, "
                    f"{m['train_graph_ops']:.0f} graph ops (medians)",
                    flush=True,
                )
        result = {
            "model": model,
            "date": started.strftime("%Y-%m-%d %H:%M UTC"),
            "machine": _machine(),
            "load_average": os.getloadavg()[0],
            "repeats": args.repeats,
            "later_steps": args.later_steps,
            "trace_ratio": ratio,
            "trace_cpu_ratio": cpu_ratio,
            "median": medians,
            "runs": runs,
            "attention_layer_ops": ops,
        }
        name = f"trace_time_{model}{'_' + args.tag if args.tag else ''}.json"
        with open(os.path.join(args.out, name), "w") as f:
            json.dump(result, f, indent=1)
            f.write("\n")


if __name__ == "__main__":
    main()
