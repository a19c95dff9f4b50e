"""Keras layers of keras_sasa."""

from keras_sasa.layers.local_attention import LocalSelfAttention2D

__all__ = ["LocalSelfAttention2D"]
