"""A small model with every keras_sasa layer and option that holds weights, for the
cross-backend tests."""

import keras

import keras_sasa


def small_sasa_model(seed=0):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((12, 12, 3))
    x = keras_sasa.AttentionStem2D(8, kernel_size=3, num_heads=2, window="sliding")(inputs)
    x = keras.layers.BatchNormalization()(x)
    x = keras_sasa.LocalSelfAttention2D(8, 5, 2, dilation_rate=2, use_bias=True)(x)
    x = keras_sasa.LocalSelfAttention2D(16, 3, 4, strides=2, border="zeros")(x)
    x = keras_sasa.LocalSelfAttention2D(16, 3, 4, implementation="reference")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(5)(x))
