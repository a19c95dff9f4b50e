"""A small hyperparameter search on digits (offline), with the Python API.

Searches kernel size, heads, stem, attention groups and positional encoding (and the
learning rate, weight decay and label smoothing in their default ranges) for a
SASA-ResNet-26 of width 16, five trials of three epochs each, then prints the trials
ranked and the configuration that `keras_sasa.training.train` would train with the best
values. Started again, the search continues where it stopped (results in
runs/tune_digits_example).

    python examples/tune_digits.py
"""

import time

from keras_sasa import training
from keras_sasa import tuning

OUTPUT_DIR = "runs/tune_digits_example"


def main():
    config = training.TrainConfig(dataset="digits", base_width=16, verbose=0)
    space = tuning.SearchSpace(kernel_size=(3, 5, 7), num_heads=(2, 4), base_width=16)
    start = time.time()
    results = tuning.search(
        config, space, tuner="random", max_trials=5, epochs=3, output_dir=OUTPUT_DIR
    )
    print(tuning.format_table(results))
    print(f"\nSearch: {time.time() - start:.0f} s; best val_accuracy {results['best_score']:.4f}")

    # The best trial as a training run: train it for longer with training.train(best).
    best = tuning.config_for(config, results["best_hyperparameters"])
    print(
        f"Best: kernel_size={best.kernel_size}, num_heads={best.num_heads}, "
        f"stem={best.stem}, attention_stages={best.attention_stages}, "
        f"use_relative_position={best.use_relative_position}, "
        f"learning_rate={best.learning_rate:.4g}"
    )


if __name__ == "__main__":
    main()
