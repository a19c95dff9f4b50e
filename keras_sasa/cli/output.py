"""Where the command line's output goes: TensorFlow's start-up lines held to a log level,
and the output of C++ code (exporters, converters) sent to a file."""

import contextlib
import importlib.util
import json
import os
import re
import sys
import tempfile


def keras_backend():
    """The backend Keras will load, read as Keras reads it, without importing Keras."""
    if os.environ.get("KERAS_BACKEND"):
        return os.environ["KERAS_BACKEND"]
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    try:
        with open(os.path.join(home, "keras.json")) as f:
            return json.load(f).get("backend", "tensorflow")
    except (OSError, ValueError, AttributeError):
        return "tensorflow"


# What TensorFlow's C++ side writes while it starts: absl's note that logs go to stderr
# before absl is initialised, then lines "I0000 00:00:..." (oneDNN, CUDA drivers, CPU
# instructions), some with continuation lines. TF_CPP_MIN_LOG_LEVEL does not reach these
# early lines (absl is not initialised yet), so they are filtered here by their severity.
_ABSL_LINE = re.compile(r"[IWEF]\d{4} \d\d:\d\d:\d\d")
_ABSL_PREAMBLE = "WARNING: All log messages before absl::InitializeLog() is called"
_SEVERITIES = "IWEF"  # TF_CPP_MIN_LOG_LEVEL 0..3 keeps these and the ones after.


def start_tensorflow():
    """Imports TensorFlow and lists its devices with its start-up lines held to a log level.

    The level is the user's TF_CPP_MIN_LOG_LEVEL where they set it (0 shows everything),
    else 2 (errors only), set for the rest of the run too; then cuInit's error where there
    is no usable CUDA driver (TensorFlow runs on the CPU) is dropped as well. The lines
    TensorFlow writes to stderr while it starts are caught; those at or above the level,
    and anything else (a Python warning), are written to stderr as they came.
    """
    if "tensorflow" in sys.modules or importlib.util.find_spec("tensorflow") is None:
        return
    user_level = os.environ.get("TF_CPP_MIN_LOG_LEVEL")
    if user_level is None:
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
    try:
        level = int(os.environ["TF_CPP_MIN_LOG_LEVEL"])
    except ValueError:
        level = 0  # TensorFlow reads a value it cannot parse as 0.
    with tempfile.TemporaryFile("w+") as caught:
        with output_to(caught, fds=(2,)):
            import tensorflow as tf

            tf.config.list_physical_devices("GPU")  # CUDA's start-up (cuInit) speaks here.
        caught.seek(0)
        keep = True
        for line in caught.read().splitlines():
            if line.startswith(_ABSL_PREAMBLE):
                if level >= 1:  # A warning.
                    continue
            elif _ABSL_LINE.match(line):  # Its continuation lines go with it.
                keep = _SEVERITIES.index(line[0]) >= level and not (
                    user_level is None and "failed call to cuInit" in line
                )
            if keep:
                print(line, file=sys.stderr)


@contextlib.contextmanager
def output_to(target, fds=(1, 2)):
    """Sends this process's file descriptors `fds` (stdout 1, stderr 2) to `target`.

    `target` is a path (written anew) or an open file. File descriptors, not sys.stdout
    and sys.stderr, so that what C++ code writes is caught too.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(fd) for fd in fds]
    try:
        with contextlib.ExitStack() as stack:
            log = target if hasattr(target, "fileno") else stack.enter_context(open(target, "w"))
            for fd in fds:
                os.dup2(log.fileno(), fd)
            try:
                yield
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                for fd, copy in zip(fds, saved, strict=True):
                    os.dup2(copy, fd)
    finally:
        for copy in saved:
            os.close(copy)
