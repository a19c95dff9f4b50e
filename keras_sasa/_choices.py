"""The named choices that several parts of the package accept, with no imports.

Ground floor: the training configuration, the command line, the search space,
`distribute` and the model builders all read these, so none of them imports another
for its list of names (and the command line needs no Keras to print them).
"""

# `keras.mixed_precision` policies a run may train under.
MIXED_PRECISION = ("none", "mixed_float16", "mixed_bfloat16")
# `keras_sasa.distribute.get_strategy` names.
STRATEGIES = ("auto", "default", "mirrored", "multi_worker", "tpu")
# The SASA-ResNet stems (`keras_sasa.models.SASAResNet(stem=...)`).
STEMS = ("attention", "conv", "attention_small", "conv_small")
