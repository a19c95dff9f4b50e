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

import shutil  # noqa: E402
import tempfile  # noqa: E402

import keras  # noqa: E402
import pytest  # noqa: E402

_JAX_CACHE = "jax_compilation_cache_dir"


def pytest_configure(config):
    """Under JAX, the processes of one test run share a compilation cache on disk.

    JAX compiles every eager op and weight initializer for each new shape (a few hundred
    ms each on a CPU): the two xdist workers build layers and models of the same shapes, and
    with the cache each shape is compiled once per run. The directory is made for the run
    (by the xdist controller, or by pytest alone) and removed at its end; only this process's
    JAX uses it: the user-environment subprocesses of the tests get no setting from it.
    """
    if keras.backend.backend() != "jax":
        return
    workerinput = getattr(config, "workerinput", None)
    if workerinput is None:
        config._sasa_jax_cache = tempfile.mkdtemp(prefix="keras-sasa-jax-cache-")
        directory = config._sasa_jax_cache
    else:
        directory = workerinput[_JAX_CACHE]
    import jax

    jax.config.update(_JAX_CACHE, directory)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node):
    """xdist controller: hands its JAX cache directory to each worker."""
    directory = getattr(node.config, "_sasa_jax_cache", None)
    if directory:
        node.workerinput[_JAX_CACHE] = directory


def pytest_unconfigure(config):
    directory = getattr(config, "_sasa_jax_cache", None)
    if directory:
        shutil.rmtree(directory, ignore_errors=True)


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
