"""Training on the JAX backend: keras.distribution.DataParallel through
keras_sasa.distribute, and the train command. The README's test command runs this file
under KERAS_BACKEND=jax, with two CPU devices (tests/conftest.py)."""

import json
import os

import keras
import numpy as np
import pytest

from backend import BACKEND
from keras_sasa import LocalSelfAttention2D
from keras_sasa import distribute
from keras_sasa import training

pytestmark = pytest.mark.skipif(
    BACKEND != "jax", reason="keras.distribution runs on JAX; this file is run under JAX"
)


@pytest.fixture(autouse=True)
def _no_distribution():
    yield
    keras.distribution.set_distribution(None)


def test_two_cpu_devices_are_configured():
    assert len(keras.distribution.list_devices("cpu")) == 2


def test_get_strategy_is_data_parallel_over_the_local_devices():
    strategy = distribute.get_strategy("auto")
    assert isinstance(strategy, distribute.DataParallelStrategy)
    assert strategy.num_replicas_in_sync == 2
    assert isinstance(keras.distribution.distribution(), keras.distribution.DataParallel)
    assert distribute.global_batch_size(16) == 32
    assert distribute.per_replica_batch_size(32) == 16
    with pytest.raises(ValueError, match="global_batch_size=33"):
        distribute.per_replica_batch_size(33)
    # XLA and multi-step loops stay on under keras.distribution.
    assert distribute.fit_options(strategy, True, 4) == (True, 4)
    single = distribute.get_strategy("default")
    assert single.num_replicas_in_sync == 1 and keras.distribution.distribution() is None
    with pytest.raises(ValueError, match="name='multi_worker'"):
        distribute.get_strategy("multi_worker")


def _train_two_steps(strategy_name):
    distribute.get_strategy(strategy_name)
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((8, 8, 3)),
            LocalSelfAttention2D(8, kernel_size=3, num_heads=2, dilation_rate=2),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(4),
        ]
    )
    model.compile(
        keras.optimizers.SGD(0.5),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 8, 8, 3)).astype("float32")
    y = rng.integers(0, 4, size=32)
    before = [np.array(w) for w in model.get_weights()]
    model.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0)
    return before, model.get_weights()


def test_data_parallel_fit_equals_one_device():
    before, one = _train_two_steps("default")
    _, two = _train_two_steps("mirrored")
    assert max(np.abs(a - b).max() for a, b in zip(before, one, strict=True)) > 1e-3
    for a, b in zip(one, two, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_train_command_runs_on_jax_with_data_parallel(tmp_path, digits_dir):
    config = training.TrainConfig(
        data_dir=digits_dir,
        output_dir=str(tmp_path / "run"),
        train_split="train[:128]",
        test_split="test[:64]",
        epochs=2,
        batch_size=32,
        base_width=4,
        num_heads=2,
        kernel_size=3,
        ema_momentum=0.5,
        verbose=0,
    )
    results = training.train(config)
    assert isinstance(keras.distribution.distribution(), keras.distribution.DataParallel)
    with open(tmp_path / "run" / "results.json") as f:
        assert json.load(f)["test_accuracy"] == results["test_accuracy"]
    assert 0.0 <= results["test_accuracy"] <= 1.0 and results["epochs"] == 2
    model = keras.saving.load_model(tmp_path / "run" / "model.keras", safe_mode=True)
    assert os.path.exists(tmp_path / "run" / "history.csv")
    images = np.zeros((2, 8, 8, 1), "float32")
    assert model.predict(images, verbose=0).shape == (2, 10)
