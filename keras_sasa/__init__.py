"""keras_sasa: stand-alone local self-attention for vision models in Keras 3."""

from keras_sasa import data
from keras_sasa import distribute
from keras_sasa import export
from keras_sasa import models
from keras_sasa import ops
from keras_sasa import tuning
from keras_sasa.layers import AttentionStem2D
from keras_sasa.layers import LocalSelfAttention2D

__version__ = "0.1.0"

__all__ = [
    "AttentionStem2D",
    "LocalSelfAttention2D",
    "data",
    "distribute",
    "export",
    "models",
    "ops",
    "tuning",
]
