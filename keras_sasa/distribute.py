"""Training on several devices: choosing a `tf.distribute` strategy and what works with it.

- `get_strategy` picks or builds the strategy: a Cloud TPU, several GPUs of one machine
  (`MirroredStrategy`), several machines (`MultiWorkerMirroredStrategy`), or one device.
- `fit_options` chooses `jit_compile` and `steps_per_execution` for `Model.compile`: on a
  TPU they are what makes it fast; under a multi-device `MirroredStrategy` or
  `MultiWorkerMirroredStrategy` Keras 3's `fit` fails with either of them (the XLA-compiled
  step reads a variable of another replica's device; the multi-step loop feeds an unset
  placeholder), so they are dropped there with a warning.
- `global_batch_size` / `per_replica_batch_size`: input pipelines batch with the global
  batch, which Keras splits evenly over the replicas.
- `worker_dir`: a directory that only this worker writes (for `BackupAndRestore`);
  `is_chief`: whether this worker writes the shared outputs; `single_device`.
- `dtype_policy`: a mixed-precision policy for the duration of a block.

On the JAX backend `tf.distribute` does not apply: `get_strategy` returns a
`DataParallelStrategy`, which installs `keras.distribution.DataParallel` over the local
devices and answers the same questions (`scope()`, `num_replicas_in_sync`) as a strategy.
"""

import contextlib
import glob
import importlib.util
import json
import logging
import os
import warnings

import keras
import tensorflow as tf

from keras_sasa import _validation as check
from keras_sasa._choices import STRATEGIES

# Steps per compiled call on a TPU when none is asked for: each call is a round trip
# from the host, so several steps per call keep the TPU busy.
TPU_STEPS_PER_EXECUTION = 32

_logger = logging.getLogger(__name__)


def get_strategy(name="auto", tpu=None):
    """A `tf.distribute.Strategy` by name.

    Call it at the start of the program, before TensorFlow runs anything: TPUs and
    multi-worker training must be set up first.

    Args:
        name: one of

            - `"auto"`: a multi-worker strategy if `TF_CONFIG` describes a cluster of
              several tasks; else the TPU named by `tpu` (or by the `TPU_NAME`
              environment variable, or the TPU of this Cloud TPU VM) if one can be
              reached; else `MirroredStrategy` over the GPUs if there are several;
              else the default strategy (one device). A TPU that cannot be reached is
              skipped silently (logged at INFO level).
            - `"default"`: the default strategy: one device, no replication.
            - `"mirrored"`: `MirroredStrategy` over all local GPUs (the CPU if none).
            - `"multi_worker"`: `MultiWorkerMirroredStrategy`; the cluster and this
              worker's place in it come from the `TF_CONFIG` environment variable.
            - `"tpu"`: `TPUStrategy` on the TPU named by `tpu`.

        tpu: TPU to use, as `TPUClusterResolver` takes it: `"local"` on a Cloud TPU VM,
            the TPU's name, or a `grpc://host:port` address. None: from the `TPU_NAME`
            environment variable (and, with `"auto"`, `"local"` on a TPU VM).

    Returns:
        The strategy. Build and compile the model inside `strategy.scope()`.

    Raises:
        ValueError: an unknown `name`, or `name="tpu"` and no TPU could be reached.
    """
    check.one_of("name", name, STRATEGIES)
    if keras.backend.backend() != "tensorflow":
        return _keras_distribution(name)
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multi_worker":
        return MultiWorkerMirroredStrategy()
    if name == "tpu":
        try:
            return _connect_tpu(tpu)
        except Exception as error:  # The resolver raises many kinds of errors.
            raise ValueError(
                f"Could not reach a TPU (tpu={tpu!r}): {error}. On a Cloud TPU VM pass "
                "tpu='local'; elsewhere the TPU's name or its grpc://host:port address."
            ) from error

    # "auto"
    if _cluster_size_from_tf_config() > 1:
        return MultiWorkerMirroredStrategy()
    tpu = tpu or _local_tpu()
    if tpu is not None or os.environ.get("TPU_NAME"):
        try:
            return _connect_tpu(tpu)
        except Exception as error:
            _logger.info("No TPU reachable (tpu=%r): %s. Not using a TPU.", tpu, error)
    gpus = _local_gpus()
    if len(gpus) > 1:
        return tf.distribute.MirroredStrategy(gpus)
    return tf.distribute.get_strategy()


class MultiWorkerMirroredStrategy(tf.distribute.MultiWorkerMirroredStrategy):
    """`tf.distribute.MultiWorkerMirroredStrategy` that Keras 3's `Model.fit` can use.

    Keras 3 (3.15) calls `strategy.reduce` in two ways that the multi-worker strategy
    rejects, so every multi-worker `fit` fails (keras-team/keras#20585):

    - before the first step, on the whole first batch `(x, y)`, to learn the input
      shapes; the strategy reduces one value at a time ("Attempt to convert a value
      (PerReplica...) to a Tensor");
    - after every step, on the scalar loss and metrics with `axis=0`; a scalar has no
      axis 0 ("Invalid reduction dimension 0 for input with 0 dimensions").

    This subclass reduces nested values one by one and scalars across replicas only;
    it is otherwise the same strategy.
    """

    def reduce(self, reduce_op, value, axis):
        reduce_one = super().reduce

        def reduce_value(v):
            one = v.values[0] if isinstance(v, tf.distribute.DistributedValues) else v
            scalar = getattr(one, "shape", None) is not None and one.shape.rank == 0
            return reduce_one(reduce_op, v, None if scalar else axis)

        return tf.nest.map_structure(reduce_value, value)


class DataParallelStrategy:
    """Data parallelism with `keras.distribution` (the JAX backend), as a strategy.

    Creating it makes `keras.distribution.DataParallel` over `devices` the global
    distribution (Keras' own way: models built and trained afterwards replicate their
    variables and split every batch over the devices). It offers what keras_sasa's
    training asks of a `tf.distribute` strategy: `scope()` and `num_replicas_in_sync`.

    Args:
        devices: device names as `keras.distribution.list_devices()` gives them, or
            None for all local devices (one device: no distribution is installed).
        install: make it the global distribution (False: only describe it).
    """

    def __init__(self, devices=None, install=True):
        devices = list(devices or keras.distribution.list_devices())
        self.devices = devices
        self.num_replicas_in_sync = len(devices)
        self.distribution = None
        if len(devices) > 1:
            self.distribution = keras.distribution.DataParallel(devices=devices)
        if install:
            keras.distribution.set_distribution(self.distribution)

    def scope(self):
        return contextlib.nullcontext()

    def __repr__(self):
        return f"DataParallelStrategy(devices={self.devices})"


def _keras_distribution(name):
    """`get_strategy` on the JAX backend."""
    if name == "multi_worker":
        raise ValueError(
            f"Invalid value for argument `name`: {name!r} is a tf.distribute strategy, "
            f"and the backend is {keras.backend.backend()!r}. Received: name={name!r}; "
            "use 'auto' or 'mirrored' (keras.distribution.DataParallel over local devices)."
        )
    if name == "default":
        return DataParallelStrategy(keras.distribution.list_devices()[:1])
    if name == "tpu":
        tpus = keras.distribution.list_devices("tpu")
        if not tpus:
            backend = keras.backend.backend()
            raise ValueError(f"Could not reach a TPU: the {backend} backend lists none.")
        return DataParallelStrategy(tpus)
    return DataParallelStrategy()


def _connect_tpu(tpu):
    resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu)
    tf.config.experimental_connect_to_cluster(resolver)
    tf.tpu.experimental.initialize_tpu_system(resolver)
    return tf.distribute.TPUStrategy(resolver)


def _local_tpu():
    """ "local" on a Cloud TPU VM, else None.

    A TPU VM has the TPU runtime (the `libtpu` package) and its chips as device files:
    /dev/accel* (v2-v4) or /dev/vfio/* (v5e and later).
    """
    chips = glob.glob("/dev/accel[0-9]*") or glob.glob("/dev/vfio/[0-9]*")
    if chips and importlib.util.find_spec("libtpu") is not None:
        return "local"
    return None


def _local_gpus():
    # Physical devices: listing them, unlike logical ones, does not start the runtime.
    return [f"/gpu:{i}" for i in range(len(tf.config.list_physical_devices("GPU")))]


def _cluster_size_from_tf_config():
    """Number of tasks (chief and workers) in `TF_CONFIG`'s cluster, 0 without one."""
    try:
        cluster = json.loads(os.environ.get("TF_CONFIG", "{}")).get("cluster", {})
    except (ValueError, AttributeError):
        return 0
    return sum(len(cluster.get(job, [])) for job in ("chief", "worker"))


def fit_options(strategy=None, jit_compile="auto", steps_per_execution="auto"):
    """`jit_compile` and `steps_per_execution` for `Model.compile` under a strategy.

    - TPU: XLA always (TPUs run nothing else) and several steps per call
      (`TPU_STEPS_PER_EXECUTION` unless a number is asked for).
    - Several replicas without a TPU (`MirroredStrategy` over several GPUs,
      `MultiWorkerMirroredStrategy`): `model.fit` of Keras 3 fails with
      `jit_compile=True` or `steps_per_execution > 1` there (keras-team/keras#19246), so
      both are turned off, with a warning if they were asked for.
    - One replica: what was asked for; `"auto"` leaves XLA to Keras' own choice and runs
      one step per call.

    Args:
        strategy: the strategy the model is compiled under. None: the current one.
        jit_compile: True, False or `"auto"`.
        steps_per_execution: a positive integer or `"auto"`.

    Returns:
        `(jit_compile, steps_per_execution)` to pass to `Model.compile`.
    """
    if jit_compile not in (True, False, "auto"):
        raise check.error("jit_compile", jit_compile, "Expected True, False or 'auto'")
    if steps_per_execution != "auto":
        check.positive_int("steps_per_execution", steps_per_execution, type_error=ValueError)
    strategy = strategy or _current_strategy()
    if isinstance(strategy, DataParallelStrategy):
        # keras.distribution runs XLA and multi-step loops on any number of devices.
        return jit_compile, 1 if steps_per_execution == "auto" else steps_per_execution

    if isinstance(strategy, tf.distribute.TPUStrategy):
        if steps_per_execution == "auto":
            steps_per_execution = TPU_STEPS_PER_EXECUTION
        return True, steps_per_execution

    if strategy.num_replicas_in_sync > 1:
        dropped = []
        if jit_compile is True:
            dropped.append("jit_compile=True")
        if steps_per_execution != "auto" and steps_per_execution > 1:
            dropped.append(f"steps_per_execution={steps_per_execution}")
        if dropped:
            warnings.warn(
                f"Ignoring {' and '.join(dropped)}: Keras' `model.fit` fails with them "
                f"under {type(strategy).__name__} over "
                f"{strategy.num_replicas_in_sync} replicas (keras-team/keras#19246). "
                "Using jit_compile=False, steps_per_execution=1.",
                stacklevel=2,
            )
        return False, 1

    if steps_per_execution == "auto":
        steps_per_execution = 1
    return jit_compile, steps_per_execution


def global_batch_size(per_replica_batch_size, strategy=None):
    """The batch size of the input pipeline: `per_replica_batch_size` x replicas."""
    check.positive_int("per_replica_batch_size", per_replica_batch_size, type_error=ValueError)
    strategy = strategy or _current_strategy()
    return per_replica_batch_size * strategy.num_replicas_in_sync


def per_replica_batch_size(global_batch_size, strategy=None):
    """The examples each replica gets of a global batch.

    Raises:
        ValueError: the global batch does not split evenly over the replicas (the
            replicas would then weigh their examples differently).
    """
    check.positive_int("global_batch_size", global_batch_size, type_error=ValueError)
    strategy = strategy or _current_strategy()
    replicas = strategy.num_replicas_in_sync
    if global_batch_size % replicas:
        raise ValueError(
            f"Invalid value for argument `global_batch_size`. Expected a multiple of the "
            f"{replicas} replicas of {type(strategy).__name__}. "
            f"Received: global_batch_size={global_batch_size}"
        )
    return global_batch_size // replicas


def worker_dir(base_dir, strategy=None):
    """A directory under `base_dir` that only this worker writes.

    Keras' `BackupAndRestore` writes its backup from every worker; several processes
    writing one file would corrupt it. Every worker holds the same weights, so each
    can back up to and restore from its own copy. Single-machine strategies get
    `base_dir` itself.
    """
    strategy = strategy or _current_strategy()
    resolver = getattr(strategy, "cluster_resolver", None)
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) or resolver is None:
        return os.fspath(base_dir)
    return os.path.join(base_dir, f"{resolver.task_type}-{resolver.task_id}")


def is_chief(strategy):
    """Whether this worker writes the shared outputs: always, except under a
    multi-worker strategy, where the chief does (or worker 0 in a cluster without one)."""
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return True
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or resolver.task_type in (None, "chief"):
        return True
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return resolver.task_type == "worker" and resolver.task_id == 0 and not has_chief


def single_device(strategy):
    """Whether `strategy` runs on one device (no replicas, no TPU)."""
    return strategy.num_replicas_in_sync == 1 and not isinstance(
        strategy, tf.distribute.TPUStrategy
    )


@contextlib.contextmanager
def dtype_policy(name):
    """Keras's global dtype policy set to `name` ("mixed_bfloat16", ...) inside the
    block, and restored after it; "none" leaves the policy as it is."""
    previous = keras.mixed_precision.global_policy()
    if name != "none":
        keras.mixed_precision.set_global_policy(name)
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)


def _current_strategy():
    """The strategy in scope (TensorFlow), or the installed keras.distribution (others)."""
    if keras.backend.backend() == "tensorflow":
        return tf.distribute.get_strategy()
    distribution = keras.distribution.distribution()
    if distribution is None:
        return DataParallelStrategy(keras.distribution.list_devices()[:1], install=False)
    devices = [str(d) for d in distribution.device_mesh.devices.flatten()]
    return DataParallelStrategy(devices, install=False)


def has_fast_float16():
    """Whether a visible device computes in float16 faster than in float32: a GPU with
    tensor cores (CUDA compute capability 7.0 or later). CPUs and TPUs do not (TPUs
    compute in bfloat16)."""
    if keras.backend.backend() != "tensorflow":
        return any(device.startswith("gpu") for device in keras.distribution.list_devices())
    for gpu in tf.config.list_physical_devices("GPU"):
        capability = tf.config.experimental.get_device_details(gpu).get("compute_capability")
        if capability is not None and tuple(capability) >= (7, 0):
            return True
    return False
