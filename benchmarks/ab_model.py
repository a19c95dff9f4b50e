"""Same-process A/B of a SASA-ResNet-26 training step: the blocked path before issue 15
(profile_layer.blocked_before) vs now, against the conv ResNet-26.

    python benchmarks/ab_model.py [--size 224] [--batch 8] [--rounds 5] [--jit both|off|on]

`model.train_on_batch` on random images (conv stem, 1000 classes); the steps alternate
between the three models round after round and each rate is the median over rounds, so
load on the shared cores falls on every model alike. Writes
benchmarks/results/issue15_model_ab.md.
"""

import argparse
import datetime
import os
import statistics
import sys
import time

import keras
import tensorflow as tf

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from profile_layer import blocked_implementation  # noqa: E402

from keras_sasa import benchmark  # noqa: E402
from keras_sasa.models import SASAResNet26  # noqa: E402


def train_step(name, size, batch, jit_compile):
    model = SASAResNet26(
        input_shape=(size, size, 3),
        classes=1000,
        stem="conv",
        attention_stages=() if name == "conv" else None,
    )
    model.compile(
        optimizer=keras.optimizers.SGD(0.01, momentum=0.9, nesterov=True),
        loss="sparse_categorical_crossentropy",
        jit_compile=jit_compile,
    )
    x = tf.random.normal((batch, size, size, 3))
    y = tf.zeros((batch,), "int32")
    with blocked_implementation("main" if name == "sasa_main" else "current"):
        model.train_on_batch(x, y)  # trace and compile
    return lambda: model.train_on_batch(x, y)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--jit", choices=("both", "off", "on"), default="both")
    parser.add_argument(
        "--output",
        default=os.path.join(
            os.path.dirname(os.path.abspath(__file__)), "results", "issue15_model_ab.md"
        ),
    )
    args = parser.parse_args()
    rows = [
        "| jit | SASA main img/s | SASA new img/s | conv img/s | main / conv | new / conv |",
        "|---|---|---|---|---|---|",
    ]
    for jit_compile in {"both": (False, True), "off": (False,), "on": (True,)}[args.jit]:
        steps = {
            n: train_step(n, args.size, args.batch, jit_compile)
            for n in ("sasa_main", "sasa_new", "conv")
        }
        times = {n: [] for n in steps}
        for _ in range(args.rounds):
            for name, step in steps.items():
                start = time.perf_counter()
                step()
                times[name].append(time.perf_counter() - start)
        rate = {n: args.batch / statistics.median(t) for n, t in times.items()}
        row = (
            f"| {jit_compile} | {rate['sasa_main']:.2f} | {rate['sasa_new']:.2f} | "
            f"{rate['conv']:.2f} | {rate['sasa_main'] / rate['conv']:.2f} | "
            f"{rate['sasa_new'] / rate['conv']:.2f} |"
        )
        print(row, flush=True)
        rows.append(row)
    text = (
        "# SASA-ResNet-26 training step before and after issue 15, same process, interleaved\n\n"
        f"Machine: {benchmark.machine_description()}; {datetime.date.today()}; shared cores "
        f"(other jobs running). `train_on_batch`, conv stem, {args.size}x{args.size}, batch "
        f"{args.batch}, median of {args.rounds} interleaved rounds. Reproduce: "
        "`python benchmarks/ab_model.py`.\n\n" + "\n".join(rows) + "\n"
    )
    with open(args.output, "w") as f:
        f.write(text)


if __name__ == "__main__":
    main()
