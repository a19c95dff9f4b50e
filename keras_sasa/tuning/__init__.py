"""Hyperparameter search over the paper's design space with keras-tuner.

- `SearchSpace`: which kernel sizes, head counts, stems, attention groups, positional
  encodings, widths, learning rates, weight decays and label smoothings to try.
- `SASAHyperModel`: a `keras_tuner.HyperModel` that builds and trains each trial with
  the pipelines and recipe of `keras_sasa.training`.
- `search(...)`: `python -m keras_sasa tune`: runs a random, Hyperband or Bayesian
  search (resumable) and writes `tuning_results.json`; `format_table` ranks its trials.

Names are imported from their modules when first used: `keras_sasa.tuning.space`, which
the command line reads before Keras starts, imports neither Keras nor keras-tuner.
"""

from keras_sasa import _lazy

# Public name -> the module of this package that defines it.
_NAMES = {
    "SASAHyperModel": "hypermodel",
    "RESULTS_FILE": "search",
    "TUNERS": "search",
    "default_output_dir": "search",
    "format_table": "search",
    "make_tuner": "search",
    "results": "search",
    "search": "search",
    "SearchSpace": "space",
    "config_for": "space",
}
# Not "search": that name is the function (importing search.py binds the module to it
# first; `_lazy` then binds the module's names, the function among them).
_MODULES = ("hypermodel", "space")

__getattr__, __dir__ = _lazy.attributes(__name__, _NAMES, _MODULES)

__all__ = sorted(_NAMES)
