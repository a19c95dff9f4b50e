from setuptools import find_packages
from setuptools import setup

setup(
    name="keras-sasa",
    version="0.1.0",
    description="Stand-alone local self-attention (Ramachandran et al. 2019) for Keras 3",
    long_description=open("README.md").read(),
    long_description_content_type="text/markdown",
    # No public repository or homepage is known yet: no URL is given rather than a made-up
    # one. The paper is the one address that exists.
    project_urls={"Paper": "https://arxiv.org/abs/1906.05909"},
    author="The keras-sasa authors",
    license="Apache-2.0",  # SPDX; the License :: classifiers are deprecated in its favour
    license_files=["LICENSE"],
    keywords=[
        "keras",
        "self-attention",
        "local attention",
        "stand-alone self-attention",
        "computer vision",
        "image classification",
        "resnet",
        "tensorflow",
        "jax",
        "onnx",
        "tflite",
    ],
    classifiers=[
        "Development Status :: 3 - Alpha",
        "Intended Audience :: Developers",
        "Intended Audience :: Science/Research",
        "Operating System :: OS Independent",
        "Programming Language :: Python :: 3",
        "Programming Language :: Python :: 3 :: Only",
        "Programming Language :: Python :: 3.10",
        "Programming Language :: Python :: 3.11",
        "Programming Language :: Python :: 3.12",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
        "Topic :: Scientific/Engineering :: Image Recognition",
        "Topic :: Software Development :: Libraries :: Python Modules",
    ],
    packages=find_packages(include=["keras_sasa", "keras_sasa.*"]),
    python_requires=">=3.10",
    install_requires=[
        "tensorflow>=2.16",
        "keras>=3.3",
        "tensorflow-datasets>=4.9",
        "importlib_resources",  # tfds.dataset_builders.store_as_tfds_dataset needs it
        "keras-tuner>=1.4",  # keras_sasa.tuning and `python -m keras_sasa tune`
        # keras-tuner imports tensorboard.plugins.hparams in every trial
        # (Tuner._configure_tensorboard_dir); TF 2.21 no longer installs tensorboard,
        # so without it every trial fails.
        "tensorboard>=2.16",
        "scipy",  # keras-tuner's Bayesian tuner (scipy.optimize)
        # The Bayesian tuner's Gaussian process, and the offline digits data set.
        "scikit-learn",
        "matplotlib",
        "numpy",
    ],
    extras_require={
        # KERAS_BACKEND=jax: the layers, models and `train` (keras.distribution).
        "jax": ["jax>=0.4.30"],
        # `keras_sasa.export.to_onnx` and `export --format onnx`: Keras's ONNX export
        # (tf2onnx on TensorFlow), and onnxruntime to run the files. Tried: onnx 1.23.2,
        # tf2onnx 1.17.0, onnxruntime 1.32.0 with TensorFlow 2.21 and Keras 3.15.
        "onnx": ["onnx>=1.16", "tf2onnx>=1.16", "onnxruntime>=1.17"],
        # LiteRT, TFLite's successor runtime (tf.lite.Interpreter is deprecated in TF 2.21);
        # keras_sasa runs .tflite files with it when installed. Tried: ai-edge-litert 2.3.0.
        "litert": ["ai-edge-litert>=1.2"],
        # The documentation site (docs/): Sphinx with MyST Markdown and the furo theme.
        # Tried: sphinx 9.0.4, myst-parser 5.2.0, furo 2025.12.19.
        "docs": ["sphinx>=7", "myst-parser>=3", "furo>=2024.1"],
        # The README's test command runs the layer and model tests under JAX too, the
        # ONNX and LiteRT tests need their runtimes, and the site is built with warnings
        # as errors (CI installs this extra).
        "test": [
            "pytest>=7",
            "pytest-xdist>=3",  # -n 2: the README's test command runs two test processes
            "jax>=0.4.30",
            "onnx>=1.16",
            "tf2onnx>=1.16",
            "onnxruntime>=1.17",
            "ai-edge-litert>=1.2",
            "sphinx>=7",
            "myst-parser>=3",
            "furo>=2024.1",
        ],
    },
    entry_points={"console_scripts": ["keras-sasa=keras_sasa.cli:main"]},
)
