"""Training SASA models with the paper's recipe: the library behind `python -m keras_sasa train`.

- `TrainConfig`: what a run trains (data, model, recipe) and where its outputs go.
- `train(config) -> dict`: trains the model (and its conv baseline with
  `compare_baseline`), resumable after a kill; returns the results written to
  `results.json`. `train_seeds(config, seeds)` does so once per seed and reports the
  mean and standard deviation.
- `make_datasets`, `build_model`, `compile_model`: the pieces `train` uses, for other
  drivers (e.g. a keras-tuner `HyperModel`) to reuse the same pipelines and recipe.
- `recipe`: the optimizer, learning rate schedule, loss and metrics.

Names are imported from their modules when first used: `keras_sasa.training.config`,
which the command line reads before Keras starts, imports no Keras.
"""

from keras_sasa import _lazy

# Public name -> the module of this package that defines it.
_NAMES = {
    "TrainConfig": "config",
    "baseline": "config",
    "resolve": "config",
    "format_results": "report",
    "format_seed_results": "report",
    "build_model": "run",
    "compile_model": "run",
    "make_datasets": "run",
    "train": "run",
    "with_run_length": "run",
    "train_seeds": "seeds",
}
_MODULES = ("callbacks", "config", "recipe", "report", "run", "run_files", "seeds")

__getattr__, __dir__ = _lazy.attributes(__name__, _NAMES, _MODULES)

__all__ = sorted([*_NAMES, "recipe"])
