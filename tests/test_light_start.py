"""What `import keras_sasa` and the command line import, and what they print on a mistake.

Every check runs a real subprocess, with this checkout first on the path and, as for a
user who did not set it, without the TF_CPP_MIN_LOG_LEVEL that conftest.py sets.
"""

import json
import os
import subprocess
import sys
import zipfile

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HEAVY = ("tensorflow", "tensorflow_datasets", "keras_tuner")

pytestmark = pytest.mark.slow


def run(args, backend="tensorflow", timeout=300, **env_changes):
    env = dict(os.environ, KERAS_BACKEND=backend)
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)
    env.update(env_changes)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (REPO, os.environ.get("PYTHONPATH")) if p)
    return subprocess.run(
        [sys.executable, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
    )


# Builds a SASA-ResNet-26 and calls both layers, reports which heavy modules were imported
# after `import keras_sasa` and after that, then saves and reloads the small model.
# (Calling the whole ResNet eagerly under JAX on a CPU takes a minute; building it makes
# every layer. Keras's `model.save` imports TensorFlow under JAX too where it is
# installed, for tf.io.gfile.)
MODELS_ONLY = r"""
import json, os, sys, tempfile
import numpy as np
import keras_sasa
after_import = [m for m in HEAVY if m in sys.modules]
import keras
keras_sasa.models.SASAResNet26(
    input_shape=(16, 16, 3), stem="attention_small", base_width=4, num_heads=2, classes=3
)
model = keras.Sequential([
    keras.Input((8, 8, 3)),
    keras_sasa.AttentionStem2D(8, kernel_size=4, num_heads=2, window="sliding"),
    keras_sasa.LocalSelfAttention2D(8, 3, 2, strides=2),
])
x = np.random.default_rng(0).uniform(size=(2, 8, 8, 3)).astype("float32")
outputs = np.asarray(model(x))
after_models = [m for m in HEAVY if m in sys.modules]
path = os.path.join(tempfile.mkdtemp(), "model.keras")
model.save(path)
loaded = keras.saving.load_model(path)  # The layers were registered by `import keras_sasa`.
difference = float(np.abs(np.asarray(loaded(x)) - outputs).max())
print(json.dumps({"after_import": after_import, "after_models": after_models,
                  "difference": difference}))
"""


@pytest.mark.parametrize("backend", ["tensorflow", "jax"])
def test_layers_and_models_import_no_data_training_or_search_libraries(backend):
    done = run(["-c", f"HEAVY = {HEAVY!r}\n" + MODELS_ONLY], backend)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.splitlines()[-1])
    expected = {"tensorflow": ["tensorflow"], "jax": []}[backend]
    # TensorFlow only as Keras's backend (JAX's backend imports none of it), and never
    # tensorflow-datasets or keras-tuner. (Keras itself imports matplotlib and scikit-learn
    # where they are installed: keras.visualization, keras.wrappers.)
    assert report["after_import"] == expected
    assert report["after_models"] == expected
    assert report["difference"] == 0.0


def test_documented_modules_are_imported_when_first_used():
    code = """
import sys, keras_sasa
assert "keras_sasa.training" not in sys.modules and "keras_tuner" not in sys.modules
from keras_sasa import tuning
print(keras_sasa.training.TrainConfig.__name__, tuning.SearchSpace.__name__,
      "keras_tuner" in sys.modules, tuning.SASAHyperModel.__name__, "keras_tuner" in sys.modules,
      keras_sasa.data.load_dataset.__name__, keras_sasa.export.to_onnx.__name__,
      keras_sasa.distribute.__name__, keras_sasa.LocalSelfAttention2D.__name__,
      sorted(set(keras_sasa.__all__) - set(dir(keras_sasa))))
try:
    keras_sasa.no_such_name
except AttributeError as error:
    print(error)
"""
    done = run(["-c", code], "jax")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        # The search space needs no keras-tuner; the hypermodel does.
        "TrainConfig SearchSpace False SASAHyperModel True load_dataset to_onnx "
        "keras_sasa.distribute LocalSelfAttention2D []",
        "module 'keras_sasa' has no attribute 'no_such_name'",
    ]


@pytest.mark.parametrize(
    "command", [[], ["export"], ["train"], ["tune"], ["attention-map"], ["convert"]]
)
def test_help_imports_neither_keras_nor_tensorflow(command):
    # -X importtime writes one line per imported module on stderr.
    done = run(["-X", "importtime", "-m", "keras_sasa", *command, "--help"])
    assert done.returncode == 0
    assert done.stdout.startswith("usage: python -m keras_sasa")
    imported = {line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines()}
    assert "keras_sasa.cli" in imported
    assert not imported & {"keras", "tensorflow", "jax", "keras_sasa.layers"}


def test_console_script_help_imports_neither_keras_nor_tensorflow():
    script = os.path.join(os.path.dirname(sys.executable), "keras-sasa")
    if not os.path.exists(script):  # A checkout run without `pip install`.
        pytest.skip("the keras-sasa console script is not installed")
    env = dict(os.environ, PYTHONPROFILEIMPORTTIME="1")  # -X importtime, for a script.
    env["PYTHONPATH"] = os.pathsep.join(p for p in (REPO, os.environ.get("PYTHONPATH")) if p)
    done = subprocess.run([script, "--help"], env=env, capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.startswith("usage: python -m keras_sasa")
    imported = {line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines()}
    assert "keras_sasa.cli" in imported
    assert not imported & {"keras", "tensorflow", "jax", "keras_sasa.layers"}


def bad_keras_file(tmp_path):
    """A zip file (as .keras files are) that is not a Keras model: read after TF starts."""
    path = tmp_path / "model.keras"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("notes.txt", "not a model")
    return path


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["export", "missing.keras", "--format", "onnx", "--output", "m.onnx"],
            "error: no such model file: missing.keras",
        ),
        (
            ["train", "--epochs", "0"],
            "python -m keras_sasa train: error: argument --epochs: expected a positive "
            "integer, got 0",
        ),
        (
            ["bench", "--serving", "--batches", "1,0"],
            "python -m keras_sasa bench: error: argument --batches: expected positive "
            "integers separated by commas, got '1,0'",
        ),
        (
            ["tune", "--kernel-sizes", "3,x"],
            "error: Invalid value for --kernel-sizes: cannot read '3,x'.",
        ),
        (
            ["export", "BAD", "--format", "tflite", "--output", "m.tflite"],
            "error: BAD is not a loadable Keras model:",
        ),
    ],
)
def test_a_mistake_is_one_line_on_stderr_and_exit_code_2(tmp_path, args, message):
    if "BAD" in args:  # Found out only once Keras (and TensorFlow) have started.
        path = str(bad_keras_file(tmp_path))
        args = [path if a == "BAD" else a for a in args]
        message = message.replace("BAD", path)
    done = run(["-m", "keras_sasa", *args])
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.count("\n") == 1 and done.stderr.startswith(message), done.stderr


@pytest.mark.parametrize("level", ["0", "3"])
def test_the_users_own_tensorflow_log_level_wins(tmp_path, level):
    # TF_CPP_MIN_LOG_LEVEL=0: the user asked for TensorFlow's messages, and they come before
    # the command's error. 3: not even the start-up lines that TensorFlow itself lets
    # through at that level (they come before absl reads it).
    path = bad_keras_file(tmp_path)
    done = run(
        ["-m", "keras_sasa", "export", str(path), "--format", "tflite", "--output", "m.tflite"],
        TF_CPP_MIN_LOG_LEVEL=level,
    )
    assert done.returncode == 2
    lines = done.stderr.splitlines()
    assert lines[-1].startswith(f"error: {path} is not a loadable Keras model")
    if level == "0":
        assert len(lines) > 1 and any("tensorflow" in line.lower() for line in lines[:-1])
    else:
        assert len(lines) == 1
