"""The Keras layer contract, checked the same way for every keras_sasa layer: the config
holds every argument and round-trips, a `.keras` file loads in safe mode, bad arguments
raise an error naming the argument and the value, mixed precision keeps float32 variables
and returns the compute dtype, and an XLA-compiled model computes what the eager one does
and trains."""

import inspect

import keras
import numpy as np
import pytest

from backend import dtype
from backend import numpy


def assert_config_round_trips(layer):
    """`get_config` holds every constructor argument, `from_config` rebuilds the same layer,
    and the class is registered under `keras_sasa`."""
    cls = type(layer)
    config = layer.get_config()
    arguments = set(inspect.signature(cls.__init__).parameters) - {"self", "kwargs"}
    assert arguments <= set(config)
    assert cls.from_config(config).get_config() == config
    assert keras.saving.get_registered_name(cls) == f"keras_sasa>{cls.__name__}"
    return config


def assert_keras_file_round_trips(layer, x, path):
    """A functional model around `layer` (unknown height and width) saved to `path` loads
    with `safe_mode=True` and gives the same outputs and layer config."""
    inputs = keras.Input((None, None, x.shape[-1]))
    model = keras.Model(inputs, layer(inputs))
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    loaded_layer = loaded.get_layer(layer.name)
    assert type(loaded_layer) is type(layer)
    assert loaded_layer.get_config() == layer.get_config()
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))


def assert_rejects(cls, kwargs, error, fragment):
    """`cls(**kwargs)` raises `error` whose message names the argument in backquotes and
    holds `fragment` ("name=value")."""
    name = fragment.split("=")[0]
    with pytest.raises(error, match=f"`{name}`") as info:
        cls(**kwargs)
    assert fragment in str(info.value)


def assert_mixed_precision(make_layer, x, policy, atol, relative=False):
    """A layer built under `policy` with the weights of a float32 one keeps float32
    variables, returns the policy's compute dtype and matches the float32 output to
    `atol` (times the output's largest magnitude if `relative`). Returns the
    mixed-precision layer."""
    reference = make_layer()
    want = numpy(reference(x))
    if relative:
        atol *= np.abs(want).max()
    keras.mixed_precision.set_global_policy(policy)
    layer = make_layer()
    layer.build(x.shape)
    layer.set_weights(reference.get_weights())
    got = layer(x)
    assert all(w.dtype == "float32" for w in layer.weights)
    assert dtype(got) == keras.mixed_precision.global_policy().compute_dtype
    np.testing.assert_allclose(numpy(got).astype("float32"), want, atol=atol)
    return layer


def assert_compiles_and_trains(layer, x, y, units, loss, optimizer, epochs, max_ratio):
    """A model `layer` -> global average pooling -> `Dense(units)`, compiled with
    `jit_compile=True`, predicts (under XLA) what the eager model computes, and `epochs` of
    training (batches of 8) bring the loss on (x, y) below `max_ratio` times its starting
    value."""
    inputs = keras.Input(x.shape[1:])
    h = keras.layers.GlobalAveragePooling2D()(layer(inputs))
    model = keras.Model(inputs, keras.layers.Dense(units)(h))
    model.compile(optimizer=optimizer, loss=loss, jit_compile=True)
    np.testing.assert_allclose(model.predict(x, verbose=0), numpy(model(x)), atol=1e-5)
    before = model.evaluate(x, y, verbose=0)
    history = model.fit(x, y, epochs=epochs, batch_size=8, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    assert model.evaluate(x, y, verbose=0) < max_ratio * before
