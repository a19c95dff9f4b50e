"""Test set-up. The first lines run before TensorFlow initialises its devices."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
if os.environ.get("KERAS_BACKEND") == "jax":
    # Two CPU devices for keras.distribution tests; read when JAX starts.
    flags = os.environ.get("XLA_FLAGS", "")
    os.environ["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count=2".strip()

import tensorflow as tf  # noqa: E402

# Two logical CPU devices, so that tf.distribute strategies can be tested on one CPU.
# This must happen before anything touches the devices.
_cpus = tf.config.list_physical_devices("CPU")
tf.config.set_logical_device_configuration(_cpus[0], [tf.config.LogicalDeviceConfiguration()] * 2)

import keras  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _reset_keras_state():
    """Each test starts from float32 and fresh layer names."""
    keras.mixed_precision.set_global_policy("float32")
    # No gc.collect() (free_memory=False): with the heap of a whole suite it takes a second
    # a test; Python collects on its own.
    keras.utils.clear_session(free_memory=False)
    yield
    keras.mixed_precision.set_global_policy("float32")


@pytest.fixture(scope="session")
def digits_dir(tmp_path_factory):
    """A TFDS data directory holding the offline digits data set, built once."""
    from keras_sasa import data

    data_dir = str(tmp_path_factory.mktemp("tfds"))
    data.dataset_info("digits", data_dir=data_dir, download=True)
    return data_dir
