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
        "keras-tuner>=1.4",
        "tensorboard>=2.16",  # keras-tuner's trials fail on TF 2.21 without it
        "scipy",  # keras-tuner's Bayesian tuner
        "scikit-learn",  # the Bayesian tuner, and the offline digits data set
        "matplotlib",
        "numpy",
    ],
    extras_require={"test": ["pytest>=7"]},
    entry_points={"console_scripts": ["keras-sasa=keras_sasa.cli:main"]},
)
