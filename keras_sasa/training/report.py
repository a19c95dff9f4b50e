"""A run's results: gathered once it is finished, and printed for one model, the model beside
its baseline, or several seeds."""

import statistics


def _percent(value):
    return "-" if value is None else f"{100 * value:.2f}%"


def _count(value):
    return "-" if value is None else f"{value:,}"


def _mega(value):
    return "-" if value is None else f"{value / 1e6:,.2f} M"


def _rate(value):
    return "-" if value is None else f"{value:,.0f}"


def _attention(results):
    stages = results.get("attention_stages") or []
    groups = ",".join(str(g) for g in stages) if stages else "none"
    return f"{results.get('stem')} / {groups}"


ROWS = (
    ("stem / attention groups", _attention),
    ("test accuracy", lambda r: _percent(r.get("test_accuracy"))),
    ("test loss", lambda r: "-" if r.get("test_loss") is None else f"{r['test_loss']:.4f}"),
    ("train split accuracy", lambda r: _percent(r.get("train_split_accuracy"))),
    ("parameters", lambda r: _count(r.get("params"))),
    ("FLOPs per image", lambda r: _mega(r.get("flops"))),
    ("train images/s", lambda r: _rate(r.get("train_images_per_second"))),
    (
        "train time (s)",
        lambda r: "-" if r.get("train_seconds") is None else f"{r['train_seconds']:,.0f}",
    ),
)


def _table(title, rows, columns):
    """`title`, then one line per `(label, fn)` of `rows` with `fn(value)` for each
    `(heading, value)` of `columns`, right-aligned under the headings."""
    cells = [[fn(value) for _, value in columns] for _, fn in rows]
    label_width = max(len(label) for label, _ in rows)
    widths = [
        max(len(heading), *(len(row[i]) for row in cells)) for i, (heading, _) in enumerate(columns)
    ]

    def line(label, texts):
        return (
            label.ljust(label_width)
            + "  "
            + "  ".join(text.rjust(width) for text, width in zip(texts, widths, strict=True))
        )

    lines = [title, line("", [heading for heading, _ in columns])]
    lines += [line(label, row) for (label, _), row in zip(rows, cells, strict=True)]
    return "\n".join(lines)


def format_results(results):
    """The results of `keras_sasa.training.train` as a table; with a "baseline" entry,
    the model and its convolutional baseline side by side."""
    columns = [("SASA model" if results.get("baseline") else "model", results)]
    if results.get("baseline"):
        columns.append(("conv baseline", results["baseline"]))
    test = f"{results['dataset']} {results.get('test_split', 'test')}"
    title = (
        f"{results['model']} on {test}, {results['epochs']} epochs, image size "
        f"{results.get('image_size')}"
    )
    return _table(title, ROWS, columns)


def _mean_std(summary, metric, scale=1.0, digits=2, suffix=""):
    value = summary.get(metric)
    if value is None:
        return "-"
    return f"{scale * value['mean']:,.{digits}f} +- {scale * value['std']:,.{digits}f}{suffix}"


SEED_ROWS = (
    ("stem / attention groups", _attention),
    ("test accuracy (mean +- std)", lambda s: _mean_std(s, "test_accuracy", 100, 2, "%")),
    (
        "test accuracy per seed",
        lambda s: " ".join(f"{100 * v:.2f}" for v in s["test_accuracy"]["values"]),
    ),
    ("train split accuracy", lambda s: _mean_std(s, "train_split_accuracy", 100, 2, "%")),
    ("final train accuracy", lambda s: _mean_std(s, "final_train_accuracy", 100, 2, "%")),
    ("parameters", lambda s: _count(s.get("params"))),
    ("FLOPs per image", lambda s: _mega(s.get("flops"))),
    ("train images/s", lambda s: _mean_std(s, "train_images_per_second", 1, 0)),
)


def format_seed_results(results):
    """The summary of `keras_sasa.training.train_seeds` as a table: mean +- standard
    deviation over the seeds for the model (and its baseline, when compared)."""
    summary = results["summary"]
    columns = [("SASA model" if "baseline" in summary else "model", summary["model"])]
    if "baseline" in summary:
        columns.append(("conv baseline", summary["baseline"]))
    first = results["runs"][0]
    seeds = ", ".join(str(seed) for seed in results["seeds"])
    title = (
        f"{first['model']} on {first['dataset']} {first.get('test_split', 'test')}, "
        f"{first['epochs']} epochs, seeds {seeds}"
    )
    return _table(title, SEED_ROWS, columns)


def run_results(config, params, flops, test, history, steps_per_epoch, train=None):
    """The results of a finished run, as `results.json` holds them: the resolved `config`,
    its model's `params` and `flops`, the `test` evaluation, the epochs' `history` rows
    and the evaluation of the training split (`train`, or None)."""
    rates = [float(row["images_per_second"]) for row in history if row.get("images_per_second")]
    seconds = [float(row["epoch_seconds"]) for row in history if row.get("epoch_seconds")]
    results = {
        "model": config.model,
        "dataset": config.dataset,
        "stem": config.stem,
        "attention_stages": list(config.attention_stages),
        "image_size": config.image_size,
        "params": params,
        "flops": flops,
        "epochs": config.epochs,
        "steps_per_epoch": steps_per_epoch,
        "batch_size": config.batch_size,
        "test_split": config.test_split,
        "test_accuracy": float(test["accuracy"]),
        "test_loss": float(test["loss"]),
        # The median ignores the first epoch of each process, which includes tracing and
        # compiling, once there are three epochs or more.
        "train_images_per_second": statistics.median(rates) if rates else None,
        # How well the model fits what it was trained on: the final (EMA) weights on the
        # training split (without its held-out share), unaugmented, in inference mode.
        "train_split_accuracy": None if train is None else float(train["accuracy"]),
        # The last epoch's running accuracy, on augmented batches, with batch norm in
        # training mode and the weights being trained (history.csv's last "accuracy").
        "final_train_accuracy": float(history[-1]["accuracy"]) if history else None,
        "train_seconds": sum(seconds),
        "config": config.to_dict(),
    }
    if "top5_accuracy" in test:
        results["test_top5_accuracy"] = float(test["top5_accuracy"])
    return results
