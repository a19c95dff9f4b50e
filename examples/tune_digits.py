"""A small hyperparameter search on digits (offline), with the Python API.

Searches kernel size and heads (and the stem, attention groups, positional encoding,
learning rate, weight decay and label smoothing in their default ranges) for a
SASA-ResNet-26 of width 16: five trials of three epochs each, scored on a held-out 20%
of the training split. Then the best trial is trained for longer as a `train` run, and
rebuilt with the hypermodel for a loop of your own. Started again, the search continues
where it stopped (results in runs/tune_digits_example).

    python examples/tune_digits.py
    python examples/tune_digits.py --quick    # 1 trial of 1 epoch, width 4, attention in group 4
"""

import argparse
import time

from keras_sasa import training
from keras_sasa import tuning


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="1 trial of 1 epoch, width 4, attention in group 4"
    )
    parser.add_argument("--data-dir", help="TFDS data directory (default: TFDS's)")
    parser.add_argument("--output-dir", default="runs/tune_digits_example")
    args = parser.parse_args()
    width, trials, epochs, best_epochs = (4, 1, 1, 1) if args.quick else (16, 5, 3, 30)

    # What every trial shares, and the space searched.
    config = training.TrainConfig(
        dataset="digits",
        data_dir=args.data_dir,
        base_width=width,
        verbose=0,
        jit_compile=False if args.quick else "auto",  # XLA compiling: a smoke test skips it.
    )
    space = tuning.SearchSpace(kernel_size=(3, 5, 7), num_heads=(2, 4), base_width=width)
    if args.quick:  # A smoke test: one attention group, so that each model traces quickly.
        space = space.replace(attention_stages=[(4,)])
    start = time.time()
    results = tuning.search(
        config, space, tuner="random", max_trials=trials, epochs=epochs,
        output_dir=args.output_dir,
    )  # fmt: skip
    print(tuning.format_table(results))
    print(f"\nSearch: {time.time() - start:.0f} s; best val_accuracy {results['best_score']:.4f}")

    # The best trial: as a training configuration (train it for longer) ...
    best = tuning.config_for(config, results["best_hyperparameters"])
    print(
        f"Best: kernel_size={best.kernel_size}, num_heads={best.num_heads}, "
        f"stem={best.stem}, attention_stages={best.attention_stages}, "
        f"use_relative_position={best.use_relative_position}, "
        f"learning_rate={best.learning_rate:.4g}"
    )
    trained = training.train(best.replace(epochs=best_epochs, output_dir=args.output_dir + "_best"))
    print(f"Best trial trained {best_epochs} epochs: test accuracy {trained['test_accuracy']:.4f}")

    # ... or rebuilt with the hypermodel, for your own keras-tuner tuner or training loop.
    hypermodel = tuning.SASAHyperModel(config, space)
    hp = hypermodel.hyperparameters(results["best_hyperparameters"])
    model = hypermodel.build(hp)  # Compiled with the paper's recipe.
    print(f"Rebuilt: {model.name}, {model.count_params():,} parameters")
    if not args.quick:
        hypermodel.fit(hp, model, epochs=3)  # Keyword arguments go to Model.fit.


if __name__ == "__main__":
    main()
