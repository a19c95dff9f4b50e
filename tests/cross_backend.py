"""Run by tests/test_backends.py under another backend (KERAS_BACKEND is set by the caller):

    python cross_backend.py DIR

loads DIR/theirs.keras (saved by the calling backend), writes its outputs on DIR/x.npy to
DIR/theirs_here.npy; builds and saves DIR/ours.keras with its own outputs in
DIR/ours.npy.
"""

import os
import sys

import keras
import numpy as np

sys.path.insert(0, os.path.dirname(__file__))

from backend_models import small_sasa_model  # noqa: E402


def main(directory):
    x = np.load(os.path.join(directory, "x.npy"))
    theirs = keras.saving.load_model(os.path.join(directory, "theirs.keras"), safe_mode=True)
    np.save(os.path.join(directory, "theirs_here.npy"), theirs.predict(x, verbose=0))
    ours = small_sasa_model(seed=1)
    ours.save(os.path.join(directory, "ours.keras"))
    np.save(os.path.join(directory, "ours.npy"), ours.predict(x, verbose=0))
    print(keras.backend.backend())


if __name__ == "__main__":
    main(sys.argv[1])
