"""What the tests need from the backend (TensorFlow, JAX or PyTorch) beyond keras.ops:
NumPy results, gradients and compiled functions."""

import keras
from keras import ops

BACKEND = keras.backend.backend()


def numpy(x):
    return ops.convert_to_numpy(x)


def dtype(x):
    """The dtype of a tensor of any backend, as a string ("float32")."""
    return keras.backend.standardize_dtype(x.dtype)


def gradients(loss_fn, inputs, jit_compile=False):
    """The gradients of the scalar `loss_fn(*inputs)` with respect to `inputs`, as NumPy.

    `jit_compile=True` runs them under XLA on TensorFlow; JAX always compiles them.
    """
    inputs = [ops.convert_to_tensor(x) for x in inputs]
    if BACKEND == "tensorflow":
        import tensorflow as tf

        def tape_gradients(*inputs):
            with tf.GradientTape() as tape:
                tape.watch(inputs)
                loss = loss_fn(*inputs)
            return tape.gradient(loss, inputs)

        if jit_compile:
            tape_gradients = tf.function(tape_gradients, jit_compile=True)
        grads = tape_gradients(*inputs)
    elif BACKEND == "jax":
        import jax

        grads = jax.jit(jax.grad(lambda xs: loss_fn(*xs)))(inputs)
    elif BACKEND == "torch":
        import torch

        inputs = [x.detach().requires_grad_(True) for x in inputs]
        grads = torch.autograd.grad(loss_fn(*inputs), inputs)
    else:
        raise NotImplementedError(BACKEND)
    return [numpy(g) for g in grads]


def jit(fn):
    """`fn` compiled with XLA (TensorFlow, JAX); PyTorch runs it as it is."""
    if BACKEND == "tensorflow":
        import tensorflow as tf

        return tf.function(fn, jit_compile=True)
    if BACKEND == "jax":
        import jax

        return jax.jit(fn)
    return fn


def run(fn, *args):
    """`fn(*args)` as NumPy. JAX runs eager code op by op, compiling each op for each new
    shape (seconds per call of the attention); there the call is compiled whole, once."""
    if BACKEND == "jax":
        import jax

        fn = jax.jit(fn)
    return keras.tree.map_structure(numpy, fn(*args))


def call(op, arrays, *args, **kwargs):
    """`op(*arrays, *args, **kwargs)` as NumPy, with `arrays` the only traced inputs."""
    return run(lambda *tensors: op(*tensors, *args, **kwargs), *arrays)
