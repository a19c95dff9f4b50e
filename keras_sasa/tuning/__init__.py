"""Hyperparameter search over the paper's design space with keras-tuner.

- `SearchSpace`: which kernel sizes, head counts, stems, attention groups, positional
  encodings, widths, learning rates, weight decays and label smoothings to try.
- `SASAHyperModel`: a `keras_tuner.HyperModel` that builds and trains each trial with
  the pipelines and recipe of `keras_sasa.training`.
- `search(...)`: `python -m keras_sasa tune`: runs a random, Hyperband or Bayesian
  search (resumable) and writes `tuning_results.json`; `format_table` ranks its trials.
"""

from keras_sasa.tuning.hypermodel import SASAHyperModel
from keras_sasa.tuning.search import RESULTS_FILE
from keras_sasa.tuning.search import TUNERS
from keras_sasa.tuning.search import default_output_dir
from keras_sasa.tuning.search import format_table
from keras_sasa.tuning.search import make_tuner
from keras_sasa.tuning.search import results
from keras_sasa.tuning.search import search
from keras_sasa.tuning.space import SearchSpace
from keras_sasa.tuning.space import config_for

__all__ = [
    "RESULTS_FILE",
    "SASAHyperModel",
    "SearchSpace",
    "TUNERS",
    "config_for",
    "default_output_dir",
    "format_table",
    "make_tuner",
    "results",
    "search",
]
