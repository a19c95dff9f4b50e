"""Loading `.keras` files that hold keras_sasa's layers.

`keras.saving.load_model` reads such a file once keras_sasa is imported: `import
keras_sasa` registers its classes with Keras. Without that import Keras fails with its
generic TypeError ("<class 'Functional'> could not be deserialized properly ... Could
not locate class 'LocalSelfAttention2D'"), which does not say what is missing.
`load_model` registers the classes itself and, for a class that is still missing, says
which one and where it comes from.
"""

import json
import re
import zipfile

import keras

import keras_sasa
from keras_sasa import layers  # noqa: F401  (registers the layers with Keras)

_MISSING = re.compile(r"Could not locate (?:class|function) '([^']+)'")


def load_model(filepath, custom_objects=None, compile=True, safe_mode=True):
    """Loads a `.keras` file: `keras.saving.load_model` with keras_sasa's layers registered.

    Same arguments and return value as `keras.saving.load_model`. Calling Keras' own
    function works as well, after `import keras_sasa`.

    Raises:
        TypeError: the file needs a class that is not registered; the message names it
            and says which package it comes from (a keras_sasa class this version lacks:
            the file was saved by another version).
        ValueError: as `keras.saving.load_model` (not a `.keras` file, a lambda under
            `safe_mode=True`, ...).

    Example:

    >>> model = keras_sasa.models.SASAResNet26(input_shape=(32, 32, 3), stem="conv_small")
    >>> model.save("model.keras")  # doctest: +SKIP
    >>> model = keras_sasa.load_model("model.keras")  # doctest: +SKIP
    """
    try:
        return keras.saving.load_model(
            filepath, custom_objects=custom_objects, compile=compile, safe_mode=safe_mode
        )
    except TypeError as error:
        missing = _MISSING.search(str(error))
        if missing is None:
            raise
        raise TypeError(_missing_class_message(filepath, missing.group(1))) from None


def _missing_class_message(filepath, name):
    registered = _registered_name(filepath, name)
    package = registered.split(">", 1)[0] if ">" in registered else None
    if package == "keras_sasa":
        return (
            f"{filepath} needs keras_sasa's {name!r}, which keras_sasa "
            f"{keras_sasa.__version__} does not have: the file was saved by another version "
            "of keras_sasa."
        )
    where = f" (registered as {registered!r})" if registered != name else ""
    return (
        f"{filepath} needs the class {name!r}{where}, which is not registered with Keras: "
        "import the package that defines it, or pass it in custom_objects, before loading."
    )


def _registered_name(filepath, name):
    """The registered name ("package>Name") under which the file's config refers to
    `name`, or `name` itself if the config cannot be read or does not say."""
    try:
        with zipfile.ZipFile(filepath) as archive:
            config = json.loads(archive.read("config.json"))
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):
        return name
    stack = [config]
    while stack:
        value = stack.pop()
        if isinstance(value, dict):
            registered = value.get("registered_name")
            if isinstance(registered, str) and registered.rsplit(">", 1)[-1] == name:
                return registered
            stack.extend(value.values())
        elif isinstance(value, list):
            stack.extend(value)
    return name
