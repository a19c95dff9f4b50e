"""keras_sasa: stand-alone local self-attention for vision models in Keras 3.

`import keras_sasa` imports Keras and the layers (which registers them, so that
`keras.saving.load_model` reads `.keras` files holding them: without the import it
cannot), `keras_sasa.load_model`, the ops and the model builders, and nothing else: the
data pipelines (TensorFlow, tensorflow-datasets), training, search (keras-tuner), export,
plotting and benchmark modules are imported when first used, as `keras_sasa.data`,
`keras_sasa.training`, ... (PEP 562 module `__getattr__`), so that the layers and models
under JAX import no TensorFlow.

The command line (`python -m keras_sasa`, `keras-sasa`) imports nothing heavy before it
has read its arguments: there, the layers too are imported when a command needs them.
"""

import importlib
import sys

__version__ = "0.1.0"

# Submodules imported on first access (`keras_sasa.training`, or `from keras_sasa import
# training`); `import keras_sasa.training` imports them as any subpackage.
_LAZY_MODULES = (
    "benchmark",
    "cli",
    "data",
    "distribute",
    "export",
    "layers",
    "models",
    "ops",
    "saving",
    "training",
    "tuning",
    "visualize",
)
# Names re-exported from `keras_sasa.layers`.
_LAZY_LAYERS = ("AttentionStem2D", "LocalSelfAttention2D")
# Names re-exported from `keras_sasa.saving`.
_LAZY_SAVING = ("load_model",)


def _starting_command_line():
    """Whether this process is keras-sasa's command line, importing its package first.

    `python -m keras_sasa` imports this package before `keras_sasa.__main__`; the console
    script `keras-sasa` imports it before `keras_sasa.cli`. Either way the command line
    reads its arguments (and answers `--help` or a bad value) before importing Keras.
    """
    argv = getattr(sys, "orig_argv", [])  # The interpreter's own arguments (3.10+).
    i = 1
    while i < len(argv):
        arg = argv[i]
        if arg == "-m":
            return argv[i + 1 : i + 2] == ["keras_sasa"]
        if arg.startswith("-m"):
            return arg == "-mkeras_sasa"
        if arg == "-c" or not arg.startswith("-"):
            break  # A script or -c: no -m module follows.
        i += 2 if arg in ("-X", "-W") else 1  # These two options take a value.
    script = sys.argv[0].replace("\\", "/").rsplit("/", 1)[-1] if sys.argv else ""
    return script in ("keras-sasa", "keras-sasa.exe", "keras-sasa-script.py")


def __getattr__(name):
    if name in _LAZY_MODULES:
        # import_module also sets the attribute on this package.
        return importlib.import_module(f"{__name__}.{name}")
    if name in _LAZY_LAYERS:
        return getattr(importlib.import_module(f"{__name__}.layers"), name)
    if name in _LAZY_SAVING:
        return getattr(importlib.import_module(f"{__name__}.saving"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY_MODULES) | set(_LAZY_LAYERS) | set(_LAZY_SAVING))


if not _starting_command_line():
    # Keras, the layers (registered for keras.saving), the ops and the model builders.
    from keras_sasa import layers  # noqa: E402, F401 (registers the layers)
    from keras_sasa import models  # noqa: E402
    from keras_sasa import ops  # noqa: E402
    from keras_sasa.layers import AttentionStem2D  # noqa: E402
    from keras_sasa.layers import LocalSelfAttention2D  # noqa: E402
    from keras_sasa.saving import load_model  # noqa: E402

__all__ = [
    "AttentionStem2D",
    "LocalSelfAttention2D",
    "data",
    "distribute",
    "export",
    "load_model",
    "models",
    "ops",
    "tuning",
]
