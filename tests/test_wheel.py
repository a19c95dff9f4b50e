"""The built wheel holds the whole package: installed into a fresh virtual environment, it
imports, and its layers, models and data sets work from there.

The wheel is built from a copy of the source (no build files left in the checkout) with
the installed setuptools (`--no-build-isolation`: nothing downloaded). The environment
sees the test's own site-packages (TensorFlow, Keras, ...) through a `.pth` line, after
its own site-packages, and not the `.pth` files in them: an editable install of
keras_sasa there is not active, so `import keras_sasa` can only find the wheel's copy
(checked with `keras_sasa.__file__`), run from a directory outside the checkout.
"""

import json
import os
import shutil
import site
import subprocess
import sys
import sysconfig
import zipfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOT_SOURCE = shutil.ignore_patterns(
    ".git", "runs", "build", "dist", "*.egg-info", "__pycache__", ".venv", "venv",
    ".pytest_cache", "benchmarks", "tests",
)  # fmt: skip

USE_THE_WHEEL = r"""
import json, os, sys
import numpy as np
import keras
import keras_sasa
from keras_sasa import data, models

keras.utils.set_random_seed(0)
x = np.random.default_rng(0).uniform(size=(2, 9, 7, 8)).astype("float32")
fast = keras_sasa.LocalSelfAttention2D(8, kernel_size=3, num_heads=2, strides=2)
outputs = np.asarray(fast(x))
reference = keras_sasa.LocalSelfAttention2D.from_config(
    {**fast.get_config(), "implementation": "reference"}
)
reference.build(x.shape)
reference.set_weights(fast.get_weights())
model = models.SASAResNet26(input_shape=(8, 8, 1), classes=10, stem="conv_small",
                            base_width=4, num_heads=2, kernel_size=3)
print(json.dumps({
    "file": keras_sasa.__file__,
    "shape": list(outputs.shape),
    "difference": float(np.abs(outputs - np.asarray(reference(x))).max()),
    "digits": data.dataset_info("digits").num_classes,
    "params": model.count_params(),
}))
"""


def package_files(root):
    """The .py files of the keras_sasa package under `root`, as relative paths."""
    found = set()
    for directory, _, files in os.walk(os.path.join(root, "keras_sasa")):
        for name in files:
            if name.endswith(".py"):
                found.add(os.path.relpath(os.path.join(directory, name), root))
    return found


def test_the_wheel_installs_into_a_fresh_environment_and_works(tmp_path):
    source = tmp_path / "source"
    shutil.copytree(REPO, source, ignore=NOT_SOURCE)
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
         "--wheel-dir", str(tmp_path / "dist"), str(source)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert built.returncode == 0, built.stdout[-2000:] + built.stderr[-2000:]
    (wheel,) = (tmp_path / "dist").glob("keras_sasa-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        in_wheel = {name for name in archive.namelist() if name.startswith("keras_sasa/")}
    assert in_wheel == {path.replace(os.sep, "/") for path in package_files(REPO)}

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    venv_site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    ours = [sysconfig.get_paths()["purelib"], *site.getsitepackages()]
    with open(os.path.join(venv_site, "test_site_packages.pth"), "w") as stream:
        stream.write("\n".join(dict.fromkeys(p for p in ours if os.path.isdir(p))) + "\n")

    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    env["TFDS_DATA_DIR"] = str(tmp_path / "tfds")
    installed = subprocess.run(
        [str(python), "-m", "pip", "install", "--no-deps", "--no-index", "--ignore-installed",
         str(wheel)],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600,
    )  # fmt: skip
    assert installed.returncode == 0, installed.stdout[-2000:] + installed.stderr[-2000:]

    done = subprocess.run(
        [str(python), "-c", USE_THE_WHEEL], capture_output=True, text=True, env=env,
        cwd=tmp_path, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.splitlines()[-1])
    assert report["file"] == os.path.join(venv_site, "keras_sasa", "__init__.py")
    assert report["shape"] == [2, 5, 4, 8]
    assert report["difference"] < 1e-5
    assert report["digits"] == 10
    from keras_sasa import models

    model = models.SASAResNet26(input_shape=(8, 8, 1), classes=10, stem="conv_small",
                                base_width=4, num_heads=2, kernel_size=3)  # fmt: skip
    assert report["params"] == model.count_params()
