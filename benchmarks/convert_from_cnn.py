"""Does starting from a trained CNN help? Fine-tuned conversions against SASA from scratch.

For each seed: the `train --compare-baseline` run (the SASA model from scratch and its conv
baseline, same depth, width and recipe); then the trained baseline's `model.keras`
converted with `keras_sasa.models.to_attention` (its stem kept, the window and heads of
the SASA model, every other layer's weights copied) and fine-tuned with the same recipe
and budget: the same data order, epochs, schedule, EMA and batch norm settings. The
conversion of the baseline has exactly the SASA model's layers; only the starting
weights differ.

Writes benchmarks/results/convert_<dataset>[_e<epochs>].json and .md: per seed and as
mean +- standard deviation, the test accuracy and loss, and the first epoch whose
validation accuracy (the test split, as history.csv records it) reaches 95%. Runs are
kept under --output-dir: a finished run is reported, not trained again.

    nice -n 10 python benchmarks/convert_from_cnn.py                # digits, 3 seeds
    python benchmarks/convert_from_cnn.py --seeds 0 --epochs 2      # a quick check
"""

import argparse
import json
import math
import os
import statistics
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
TARGET = 0.95


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated (default: 0,1,2)")
    parser.add_argument("--epochs", type=int, help="default: the train command's")
    parser.add_argument("--output-dir", help="the runs (default: runs/convert_<dataset>_e<E>)")
    parser.add_argument("--results-dir", default=os.path.join(HERE, "results"))
    return parser.parse_args(argv)


def epochs_to_reach(history, target=TARGET):
    """The first epoch (1-based) whose val_accuracy reaches `target`; None if none does."""
    for row in history:
        if float(row["val_accuracy"]) >= target:
            return int(row["epoch"]) + 1
    return None


def read_history(path):
    from keras_sasa.training import run_files

    return run_files.read_history(path)


def fine_tune(config, info, baseline_path, run_dir):
    """Converts the trained baseline at `baseline_path`, fine-tunes it with `config`'s
    recipe in `run_dir`, and returns its results (also written to run_dir/results.json)."""
    import keras

    from keras_sasa import models
    from keras_sasa import training
    from keras_sasa.training import callbacks
    from keras_sasa.training import recipe
    from keras_sasa.training import run
    from keras_sasa.training import run_files

    results_path = os.path.join(run_dir, "results.json")
    finished = run_files.read_json(results_path)
    if finished is not None:
        return finished
    os.makedirs(run_dir, exist_ok=True)
    history_path = os.path.join(run_dir, "history.csv")
    if os.path.exists(history_path):
        os.remove(history_path)  # An unfinished fine-tuning starts over.

    # The data of the scratch run, epoch by epoch (see `training.run.train_run`).
    keras.utils.set_random_seed(config.seed)
    _, test_data, steps_per_epoch = training.make_datasets(config, info)
    config = training.with_run_length(config, steps_per_epoch)
    keras.utils.set_random_seed(config.seed)
    train_data, _, _ = training.make_datasets(config, info, initial_epoch=0)

    keras.utils.set_random_seed(config.seed)
    cnn = keras.saving.load_model(baseline_path)
    model = models.to_attention(
        cnn,
        kernel_size=config.kernel_size,
        num_heads=config.num_heads,
        use_relative_position=config.use_relative_position,
    )
    recipe.set_batch_norm_momentum(model, config.batch_norm_momentum)
    training.compile_model(model, config, steps_per_epoch)
    recipe.initialize_batch_norm_statistics(model, run.first_images(config, info))
    model.fit(
        train_data,
        epochs=config.epochs,
        steps_per_epoch=steps_per_epoch,
        validation_data=test_data,
        callbacks=[
            *recipe.ema_callbacks(model.optimizer),
            callbacks.EpochCSVLogger(history_path),
        ],
        verbose=2,
        shuffle=False,
    )
    recipe.separate_variable_buffers(model.optimizer)
    test = model.evaluate(test_data, return_dict=True, verbose=0)
    results = {
        "params": int(sum(math.prod(w.shape) for w in model.trainable_weights)),
        "epochs": config.epochs,
        "test_accuracy": float(test["accuracy"]),
        "test_loss": float(test["loss"]),
        "converted_from": baseline_path,
    }
    run_files.write_json_atomically(results_path, results)
    return results


def summarize(rows):
    def mean_std(values):
        values = [v for v in values if v is not None]
        if not values:
            return None, None
        return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0

    return {
        key: mean_std([row[key] for row in rows])
        for key in ("test_accuracy", "test_loss", "epochs_to_95")
    }


def markdown(table, name, seeds, epochs):
    lines = [
        f"# {name}: fine-tuned conversion of the trained conv baseline vs SASA from scratch",
        "",
        f"`python benchmarks/convert_from_cnn.py --seeds {','.join(map(str, seeds))}` "
        f"({epochs} epochs each; 2-core CPU, TF 2.21, Keras 3.15, 2026-12-06). Epochs to 95%: "
        "the first epoch whose test-split accuracy in history.csv reaches 95% (EMA weights).",
        "",
        "| model | seed | parameters | test accuracy | test loss | epochs to 95% |",
        "|---|---|---|---|---|---|",
    ]
    for label, rows in table.items():
        for row in rows:
            lines.append(
                f"| {label} | {row['seed']} | {row['params']:,} | "
                f"{100 * row['test_accuracy']:.2f}% | {row['test_loss']:.4f} | "
                f"{row['epochs_to_95'] or 'not reached'} |"
            )
    lines += ["", "| model | test accuracy | test loss | epochs to 95% |", "|---|---|---|---|"]
    for label, rows in table.items():
        summary = summarize(rows)
        acc, loss, reach = (summary[k] for k in ("test_accuracy", "test_loss", "epochs_to_95"))
        reach_text = "-" if reach[0] is None else f"{reach[0]:.1f} +- {reach[1]:.1f}"
        lines.append(
            f"| {label} | {100 * acc[0]:.2f} +- {100 * acc[1]:.2f}% | "
            f"{loss[0]:.4f} +- {loss[1]:.4f} | {reach_text} |"
        )
    return "\n".join(lines) + "\n"


def main(argv=None):
    args = parse_args(argv)
    from keras_sasa import data
    from keras_sasa import training

    seeds = [int(seed) for seed in args.seeds.split(",")]
    name = f"convert_{args.dataset}" + (f"_e{args.epochs}" if args.epochs else "")
    output_dir = args.output_dir or os.path.join("runs", name)
    config = training.TrainConfig(
        dataset=args.dataset,
        epochs=args.epochs,
        compare_baseline=True,
        output_dir=output_dir,
        verbose=2,
    )
    scratch = training.train_seeds(config, seeds)
    info = data.dataset_info(args.dataset, download=True)
    table = {"conv baseline": [], "SASA from scratch": [], "converted baseline, fine-tuned": []}
    for run_results in scratch["runs"]:
        resolved = training.TrainConfig(**run_results["config"])
        seed_dir = resolved.output_dir
        baseline_dir = os.path.join(seed_dir, "baseline")
        tuned_dir = os.path.join(seed_dir, "converted")
        tuned = fine_tune(resolved, info, os.path.join(baseline_dir, "model.keras"), tuned_dir)
        for label, results, run_dir in (
            ("conv baseline", run_results["baseline"], baseline_dir),
            ("SASA from scratch", run_results, seed_dir),
            ("converted baseline, fine-tuned", tuned, tuned_dir),
        ):
            history = read_history(os.path.join(run_dir, "history.csv"))
            table[label].append(
                {
                    "seed": resolved.seed,
                    "params": results["params"],
                    "test_accuracy": results["test_accuracy"],
                    "test_loss": results["test_loss"],
                    "epochs_to_95": epochs_to_reach(history),
                }
            )
    os.makedirs(args.results_dir, exist_ok=True)
    epochs = scratch["runs"][0]["config"]["epochs"]
    summary = {label: summarize(rows) for label, rows in table.items()}
    with open(os.path.join(args.results_dir, f"{name}.json"), "w") as f:
        json.dump(
            {"seeds": seeds, "epochs": epochs, "runs": table, "summary": summary}, f, indent=1
        )
    text = markdown(table, name, seeds, epochs)
    with open(os.path.join(args.results_dir, f"{name}.md"), "w") as f:
        f.write(text)
    print(text)


if __name__ == "__main__":
    sys.exit(main())
