"""Keras layers of keras_sasa."""

from keras_sasa.layers.attention_stem import AttentionStem2D
from keras_sasa.layers.local_attention import LocalSelfAttention2D

__all__ = ["AttentionStem2D", "LocalSelfAttention2D"]
