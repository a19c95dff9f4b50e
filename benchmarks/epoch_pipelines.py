"""Time to build, and to read the first batch of, a training pipeline of N epochs read by
number (`load_dataset(initial_epoch=0, epochs=N)`, as every seeded run builds it): the
reason for `TrainConfig`'s `MAX_EPOCHS`.

    python benchmarks/epoch_pipelines.py [N ...]     (default: 10 100 300 1000)

Digits, batch 64. Each N runs in this process after the previous ones.
"""

import sys
import time

from keras_sasa import data


def main(counts):
    for epochs in counts:
        start = time.perf_counter()
        dataset = data.load_dataset(
            "digits", "train", 64, training=True, seed=0, initial_epoch=0, epochs=epochs
        )
        built = time.perf_counter() - start
        next(iter(dataset))
        first = time.perf_counter() - start - built
        print(f"{epochs:>6} epochs: built in {built:7.1f} s, first batch after {first:7.1f} s")


if __name__ == "__main__":
    main([int(arg) for arg in sys.argv[1:]] or [10, 100, 300, 1000])
