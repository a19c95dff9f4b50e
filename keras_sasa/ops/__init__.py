"""The attention math as functions over plain tensors (no weights)."""

from keras_sasa.ops.stem import attention_stem
from keras_sasa.ops.stem import mixture_weights
from keras_sasa.ops.stem import spatially_aware_attention
from keras_sasa.ops.window_attention import local_attention
from keras_sasa.ops.window_attention import local_attention_blocked
from keras_sasa.ops.window_attention import local_attention_reference
from keras_sasa.ops.window_attention import local_attention_unrolled

__all__ = [
    "attention_stem",
    "local_attention",
    "local_attention_blocked",
    "local_attention_reference",
    "local_attention_unrolled",
    "mixture_weights",
    "spatially_aware_attention",
]
