"""A training loop of your own on the JAX backend: `jax.value_and_grad` over Keras's
`stateless_call`, `jax.jit`, and the optimizer's `stateless_apply`.

The layers are written in `keras.ops`, so the same model trains under JAX; this is the
loop of Keras's guide "Writing a training loop from scratch in JAX", on scikit-learn's
8x8 digits (no download).

    python examples/jax_training_loop.py            # 10 epochs
    python examples/jax_training_loop.py --quick    # 1 epoch on 256 images
"""

import os

os.environ["KERAS_BACKEND"] = "jax"  # Before Keras is imported.

import argparse  # noqa: E402

import jax  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402

import keras_sasa  # noqa: E402

BATCH_SIZE = 64


def digits():
    data = load_digits()
    images = (data.images[..., None] / 16.0).astype("float32")
    return train_test_split(
        images, data.target, test_size=0.2, stratify=data.target, random_state=0
    )


def build_model():
    return keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(32, 3, padding="same"),
            keras_sasa.LocalSelfAttention2D(32, kernel_size=7, num_heads=4),
            keras_sasa.LocalSelfAttention2D(64, kernel_size=7, num_heads=8, strides=2),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(10),
        ]
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 epoch on 256 images")
    parser.add_argument("--epochs", type=int, default=10)
    args = parser.parse_args()
    assert keras.backend.backend() == "jax"
    epochs = 1 if args.quick else args.epochs

    keras.utils.set_random_seed(0)
    x_train, x_test, y_train, y_test = digits()
    if args.quick:
        x_train, y_train = x_train[:256], y_train[:256]
    model = build_model()
    optimizer = keras.optimizers.Adam(2e-3)
    optimizer.build(model.trainable_variables)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    def compute_loss(trainable, non_trainable, x, y):
        logits, non_trainable = model.stateless_call(trainable, non_trainable, x, training=True)
        return loss_fn(y, logits), non_trainable

    grad_fn = jax.value_and_grad(compute_loss, has_aux=True)

    @jax.jit
    def train_step(state, x, y):
        trainable, non_trainable, optimizer_variables = state
        (loss, non_trainable), grads = grad_fn(trainable, non_trainable, x, y)
        trainable, optimizer_variables = optimizer.stateless_apply(
            optimizer_variables, grads, trainable
        )
        return loss, (trainable, non_trainable, optimizer_variables)

    @jax.jit
    def predict(trainable, non_trainable, x):
        logits, _ = model.stateless_call(trainable, non_trainable, x)
        return logits

    state = (
        [v.value for v in model.trainable_variables],
        [v.value for v in model.non_trainable_variables],
        [v.value for v in optimizer.variables],
    )
    rng = np.random.default_rng(0)
    steps = len(x_train) // BATCH_SIZE
    for epoch in range(epochs):
        order = rng.permutation(len(x_train))
        losses = []
        for step in range(steps):
            batch = order[step * BATCH_SIZE : (step + 1) * BATCH_SIZE]
            loss, state = train_step(state, x_train[batch], y_train[batch])
            losses.append(float(loss))
        logits = predict(state[0], state[1], x_test)
        accuracy = float(np.mean(np.argmax(logits, axis=-1) == y_test))
        print(f"epoch {epoch + 1}: loss {np.mean(losses):.4f}, test accuracy {accuracy:.4f}")

    # Back into the model's variables, for model.save, model.predict, export ...
    trainable, non_trainable, _ = state
    for variable, value in zip(model.trainable_variables, trainable, strict=True):
        variable.assign(value)
    for variable, value in zip(model.non_trainable_variables, non_trainable, strict=True):
        variable.assign(value)
    same = np.allclose(model.predict(x_test, verbose=0), logits, atol=1e-5)
    print(f"model.predict gives the loop's logits: {same}")


if __name__ == "__main__":
    main()
