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

import importlib

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
_MODULES = ("hypermodel", "space")  # `search` is the function


def __getattr__(name):
    if name in _NAMES:
        # Every name of the module at once: importing `search.py` binds its module to the
        # package's `search`, which must stay the function.
        module = importlib.import_module(f"{__name__}.{_NAMES[name]}")
        for each, home in _NAMES.items():
            if home == _NAMES[name]:
                globals()[each] = getattr(module, each)
        return globals()[name]
    if name in _MODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_NAMES) | set(_MODULES))


__all__ = sorted(_NAMES)
