"""keras_sasa.distribute: strategies, fit options, batch sizes, multi-worker training.

conftest.py splits the CPU into two logical devices, so MirroredStrategy has two replicas
here; the multi-worker tests start two worker processes on 127.0.0.1.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import warnings

import numpy as np
import pytest
import tensorflow as tf

import multi_worker_fit
from keras_sasa import distribute

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKER_SCRIPT = os.path.join(REPO_ROOT, "tests", "multi_worker_fit.py")
# Per run of two workers; one takes about 15 s on two cores.
WORKER_TIMEOUT_S = 120
# Weights after 3 epochs move by about 1e-2..1e-1; distributed and single-device
# training agree to about 5e-7.
TOLERANCE = 1e-5


def two_cpu_mirrored():
    return tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])


def fit_single_device(data_dir, epochs=multi_worker_fit.EPOCHS):
    # On the CPU, like the replicas it is compared with (a GPU would round differently).
    strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
    with strategy.scope():
        model = multi_worker_fit.build_model()
        multi_worker_fit.compile_model(model, strategy)
    history = model.fit(multi_worker_fit.training_data(data_dir), epochs=epochs, verbose=0)
    return model.get_weights(), history.history["loss"]


@pytest.fixture(scope="module")
def single_device_result(digits_dir):
    return fit_single_device(digits_dir)


def max_weight_difference(weights, other):
    assert len(weights) == len(other)
    assert all(np.all(np.isfinite(w)) for w in [*weights, *other])
    return max(float(np.max(np.abs(a - b))) for a, b in zip(weights, other))


# Strategies.


def test_unknown_strategy_name_raises_listing_the_names():
    with pytest.raises(ValueError, match=r"'multi_worker', 'tpu'\). Received: name='gpu'"):
        distribute.get_strategy("gpu")


def test_auto_without_accelerators_or_cluster_is_the_default_strategy(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    monkeypatch.delenv("TPU_NAME", raising=False)
    monkeypatch.setattr(distribute, "_local_tpu", lambda: None)
    monkeypatch.setattr(distribute, "_local_gpus", lambda: [])
    strategy = distribute.get_strategy("auto")
    assert strategy is tf.distribute.get_strategy()
    assert strategy.num_replicas_in_sync == 1


def test_auto_mirrors_over_several_gpus(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    monkeypatch.delenv("TPU_NAME", raising=False)
    monkeypatch.setattr(distribute, "_local_tpu", lambda: None)
    # Stand-ins for two GPUs: the two logical CPUs.
    monkeypatch.setattr(distribute, "_local_gpus", lambda: ["/cpu:0", "/cpu:1"])
    strategy = distribute.get_strategy("auto")
    assert isinstance(strategy, tf.distribute.MirroredStrategy)
    assert strategy.num_replicas_in_sync == 2


def test_tpu_strategy_without_a_tpu_raises_value_error(monkeypatch):
    monkeypatch.delenv("TPU_NAME", raising=False)
    with pytest.raises(ValueError, match="Could not reach a TPU .*tpu='local'"):
        distribute.get_strategy("tpu")


def test_auto_skips_a_tpu_it_cannot_reach(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    monkeypatch.setattr(distribute, "_local_tpu", lambda: "local")  # Looks like a TPU VM,
    tried = []

    def unreachable(tpu):
        tried.append(tpu)
        raise RuntimeError("no TPU devices")  # but its TPU cannot be reached.

    monkeypatch.setattr(distribute, "_connect_tpu", unreachable)
    monkeypatch.setattr(distribute, "_local_gpus", lambda: [])
    assert distribute.get_strategy("auto") is tf.distribute.get_strategy()
    assert tried == ["local"]


# Fit options.


def test_fit_options_drop_jit_and_steps_for_two_mirrored_replicas_with_a_warning():
    with pytest.warns(UserWarning, match=r"jit_compile=True and steps_per_execution=4.*#19246"):
        options = distribute.fit_options(two_cpu_mirrored(), True, 4)
    assert options == (False, 1)


def test_fit_options_keep_what_is_asked_for_on_one_device():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert distribute.fit_options(tf.distribute.get_strategy(), True, 4) == (True, 4)
        assert distribute.fit_options(tf.distribute.get_strategy()) == ("auto", 1)
        # Nothing asked for: nothing to warn about.
        assert distribute.fit_options(two_cpu_mirrored()) == (False, 1)


def test_fit_options_reject_bad_values():
    with pytest.raises(ValueError, match="steps_per_execution=0"):
        distribute.fit_options(None, "auto", 0)
    with pytest.raises(ValueError, match="jit_compile='yes'"):
        distribute.fit_options(None, "yes", 1)


def test_model_fits_under_two_replicas_with_the_fit_options_given_for_jit_and_steps(
    digits_dir,
):
    strategy = two_cpu_mirrored()
    with pytest.warns(UserWarning, match="Ignoring"):
        jit_compile, steps_per_execution = distribute.fit_options(strategy, True, 4)
    with strategy.scope():
        model = multi_worker_fit.build_model()
        model.compile(
            optimizer="sgd",
            loss="sparse_categorical_crossentropy",
            jit_compile=jit_compile,
            steps_per_execution=steps_per_execution,
        )
    history = model.fit(multi_worker_fit.training_data(digits_dir), epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])


# Batch sizes.


def test_global_batch_is_per_replica_batch_times_replicas():
    strategy = two_cpu_mirrored()
    assert distribute.global_batch_size(32, strategy) == 64
    assert distribute.per_replica_batch_size(64, strategy) == 32
    assert distribute.global_batch_size(32) == 32  # The default strategy: one replica.
    with pytest.raises(ValueError, match="multiple of the 2 replicas.*global_batch_size=63"):
        distribute.per_replica_batch_size(63, strategy)
    with pytest.raises(ValueError, match="per_replica_batch_size=0"):
        distribute.global_batch_size(0, strategy)


def test_worker_dir_is_the_base_dir_on_one_machine(tmp_path):
    assert distribute.worker_dir(str(tmp_path)) == str(tmp_path)
    assert distribute.worker_dir(str(tmp_path), two_cpu_mirrored()) == str(tmp_path)


# Training.


def test_mirrored_training_over_two_cpus_matches_one_device(digits_dir, single_device_result):
    strategy = two_cpu_mirrored()
    assert strategy.num_replicas_in_sync == 2
    with strategy.scope():
        model = multi_worker_fit.build_model()
        multi_worker_fit.compile_model(model, strategy)
    initial = model.get_weights()
    history = model.fit(
        multi_worker_fit.training_data(digits_dir), epochs=multi_worker_fit.EPOCHS, verbose=0
    )
    weights, losses = single_device_result
    assert max_weight_difference(initial, weights) > 1e-2  # Training moved the weights,
    assert max_weight_difference(model.get_weights(), weights) < TOLERANCE  # identically.
    np.testing.assert_allclose(history.history["loss"], losses, atol=TOLERANCE)
    assert losses[-1] < losses[0]


def free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def start_workers(data_dir, backup_dir, out_dir, extra_args=()):
    """Two worker processes of one multi-worker job; returns (processes, result paths)."""
    workers = ",".join(f"127.0.0.1:{port}" for port in free_ports(2))
    env = {
        key: value
        for key, value in os.environ.items()
        if key.lower() not in ("tf_config", "http_proxy", "https_proxy", "all_proxy")
    }
    # CPU only: two workers would not share one GPU, and the reference ran on the CPU.
    env.update(PYTHONPATH=REPO_ROOT, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    processes, outs = [], []
    for index in range(2):
        out = os.path.join(out_dir, f"worker{index}.npz")
        command = [
            sys.executable,
            WORKER_SCRIPT,
            "--workers",
            workers,
            "--index",
            str(index),
            "--data-dir",
            data_dir,
            "--backup-dir",
            backup_dir,
            "--out",
            out,
            *extra_args,
        ]
        log = open(out + ".log", "w")
        processes.append(
            subprocess.Popen(
                command,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        )
        log.close()
        outs.append(out)
    return processes, outs


def wait_for(processes, outs, deadline):
    """Waits for the workers to exit; kills them and fails on errors or at the deadline."""
    try:
        for process in processes:
            process.wait(timeout=max(1.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        kill(processes)
        pytest.fail(f"multi-worker job still running after {WORKER_TIMEOUT_S} s:\n{logs(outs)}")
    codes = [process.returncode for process in processes]
    assert codes == [0, 0], f"workers exited with {codes}:\n{logs(outs)}"


def kill(processes):
    for process in processes:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def logs(outs):
    return "\n".join(open(out + ".log").read()[-3000:] for out in outs)


def load_result(out):
    result = np.load(out)
    weights = [result[f"weight_{i}"] for i in range(len(result.files) - 4)]
    return result, weights


@pytest.mark.slow  # Worker processes.
def test_two_worker_training_matches_one_process(tmp_path, digits_dir, single_device_result):
    processes, outs = start_workers(digits_dir, str(tmp_path / "backup"), str(tmp_path))
    wait_for(processes, outs, time.monotonic() + WORKER_TIMEOUT_S)

    weights, losses = single_device_result
    for out in outs:
        result, worker_weights = load_result(out)
        assert str(result["strategy"]) == "MultiWorkerMirroredStrategy"  # "auto" chose it
        assert int(result["replicas"]) == 2
        assert result["epochs_run"].tolist() == [0, 1, 2]
        assert max_weight_difference(worker_weights, weights) < TOLERANCE
        np.testing.assert_allclose(result["loss"], losses, atol=TOLERANCE)


@pytest.mark.slow  # Worker processes.
def test_killed_two_worker_job_resumes_after_the_last_backed_up_epoch(
    tmp_path, digits_dir, single_device_result
):
    backup_dir = str(tmp_path / "backup")
    processes, outs = start_workers(
        digits_dir, backup_dir, str(tmp_path), ["--hang-after-epoch", "2"]
    )
    deadline = time.monotonic() + WORKER_TIMEOUT_S
    try:
        while not all(os.path.exists(out + ".hanging") for out in outs):
            if any(process.poll() is not None for process in processes):
                pytest.fail(f"a worker exited before epoch 2 was backed up:\n{logs(outs)}")
            if time.monotonic() > deadline:
                pytest.fail(f"epoch 2 not backed up after {WORKER_TIMEOUT_S} s:\n{logs(outs)}")
            time.sleep(0.2)
    finally:
        kill(processes)  # SIGKILL, as a preempted machine: no clean-up runs.

    for index, out in enumerate(outs):
        with open(out + ".hanging") as f:
            assert json.load(f) == [0, 1]
        # Each worker backed up to its own directory (see distribute.worker_dir).
        with open(os.path.join(backup_dir, f"worker-{index}", "training_metadata.json")) as f:
            assert json.load(f)["epoch"] == 2
        assert not os.path.exists(out)

    processes, outs = start_workers(digits_dir, backup_dir, str(tmp_path))
    wait_for(processes, outs, time.monotonic() + WORKER_TIMEOUT_S)

    weights, losses = single_device_result
    for out in outs:
        result, worker_weights = load_result(out)
        assert result["epochs_run"].tolist() == [2]  # Only the epoch that was lost.
        assert max_weight_difference(worker_weights, weights) < TOLERANCE
        np.testing.assert_allclose(result["loss"], losses[2:], atol=TOLERANCE)
