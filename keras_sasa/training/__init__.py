"""Training SASA models with the paper's recipe: the library behind `python -m keras_sasa train`.

- `TrainConfig`: what a run trains (data, model, recipe) and where its outputs go.
- `train(config) -> dict`: trains the model (and its conv baseline with
  `compare_baseline`), resumable after a kill; returns the results written to
  `results.json`. `train_seeds(config, seeds)` does so once per seed and reports the
  mean and standard deviation.
- `make_datasets`, `build_model`, `compile_model`: the pieces `train` uses, for other
  drivers (e.g. a keras-tuner `HyperModel`) to reuse the same pipelines and recipe.
- `recipe`: the optimizer, learning rate schedule, loss and metrics.
"""

from keras_sasa.training import recipe
from keras_sasa.training.config import TrainConfig
from keras_sasa.training.config import baseline
from keras_sasa.training.config import resolve
from keras_sasa.training.report import format_results
from keras_sasa.training.report import format_seed_results
from keras_sasa.training.run import build_model
from keras_sasa.training.run import compile_model
from keras_sasa.training.run import make_datasets
from keras_sasa.training.run import train
from keras_sasa.training.run import train_seeds
from keras_sasa.training.run import with_run_length

__all__ = [
    "TrainConfig",
    "baseline",
    "build_model",
    "compile_model",
    "format_results",
    "format_seed_results",
    "make_datasets",
    "recipe",
    "resolve",
    "train",
    "train_seeds",
    "with_run_length",
]
