from setuptools import find_packages
from setuptools import setup

setup(
    name="keras-sasa",
    version="0.1.0",
    description="Stand-alone local self-attention (Ramachandran et al. 2019) for Keras 3",
    long_description=open("README.md").read(),
    long_description_content_type="text/markdown",
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
        # The README's test command runs the layer and model tests under JAX too.
        "test": ["pytest>=7", "jax>=0.4.30"],
    },
    entry_points={"console_scripts": ["keras-sasa=keras_sasa.cli:main"]},
)
