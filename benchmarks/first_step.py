"""Time to the end of the first `fit` of a small SASA-ResNet-26, with the optimizer built
before `fit` (as `keras_sasa.training.compile_model` does) and without (Keras' default
outside a distribution strategy, where the optimizer's variables are made inside the
first traced step and TensorFlow traces the step twice).

    python benchmarks/first_step.py [--jit]

Each case runs in a fresh process: one epoch of two batches of 32 (8x8x1 images, width 16,
k=3, 2 heads, conv_small stem, EMA on), so the time is almost all tracing (and XLA
compiling with --jit).
"""

import argparse
import json
import subprocess
import sys

CASE = """
import json, sys, time
import numpy as np
import keras
from keras_sasa import models
from keras_sasa.training import recipe
prebuild, jit = sys.argv[1] == "1", sys.argv[2] == "1"
model = models.SASAResNet26(input_shape=(8, 8, 1), classes=10, stem="conv_small",
                            kernel_size=3, num_heads=2, base_width=16)
model.compile(optimizer=recipe.make_optimizer(0.01, ema_momentum=0.9),
              loss=recipe.make_loss(), metrics=recipe.make_metrics(10), jit_compile=jit)
x = np.random.default_rng(0).random((64, 8, 8, 1), dtype="float32")
y = keras.utils.to_categorical(np.arange(64) % 10, 10)
start = time.perf_counter()
if prebuild:
    model.optimizer.build(model.trainable_variables)
model.fit(x, y, batch_size=32, epochs=1, verbose=0)
print(json.dumps({"seconds": time.perf_counter() - start}))
"""


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jit", action="store_true", help="jit_compile=True")
    args = parser.parse_args()
    for prebuild in (False, True):
        out = subprocess.run(
            [sys.executable, "-c", CASE, str(int(prebuild)), str(int(args.jit))],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        seconds = json.loads(out.stdout.strip().splitlines()[-1])["seconds"]
        label = "optimizer built before fit" if prebuild else "Keras default"
        print(f"{label:28s} jit_compile={args.jit}: first fit {seconds:.1f} s")


if __name__ == "__main__":
    main()
