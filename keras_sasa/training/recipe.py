"""The paper's training recipe, made of Keras parts: optimizer, schedule, loss, metrics.

Ramachandran et al. 2019, Appendix (ImageNet): SGD with Nesterov momentum, learning rate
1.6 at batch 4096 (0.1 per 256 images) with a 10-epoch linear warm-up and cosine decay
over 130 epochs, and an exponential moving average (EMA) of the weights with decay
0.9999, whose weights are the ones evaluated. Label smoothing and weight decay are
options here (the paper's text does not give them).

Everything is stock Keras: `keras.optimizers.SGD(nesterov=True, use_ema=True,
weight_decay=...)`, `keras.optimizers.schedules.CosineDecay(warmup_target=...,
warmup_steps=...)`, `keras.losses.CategoricalCrossentropy(label_smoothing=...)`, and
`keras.callbacks.SwapEMAWeights` to validate with the EMA weights during training
(`Model.fit` itself puts the EMA weights into the model when it returns).

Under `mixed_float16`, `Model.compile` wraps the optimizer in a
`keras.optimizers.LossScaleOptimizer`, which skips the steps whose gradients overflow
(the first few of a run, while its loss scale comes down from 2**15). The schedule and
the EMA follow the optimizer's `iterations`, the steps taken, so such a run's learning
rate ends a few steps short of 0; `check_steps_taken` says so
and refuses a run with no step taken. The schedule does not count the skipped steps:
Keras' EMA starts its average from the weights at iteration 0 and would start from
zeros.

The recipe's numbers and arithmetic need no Keras: the functions that build Keras objects
import it when called, so that `TrainConfig` (and the command line's flags, read from its
fields before Keras starts) can take its defaults from here.
"""

import math

from keras_sasa import _validation as validation

# Paper: 1.6 at batch 4096, i.e. the usual 0.1 per 256 images.
BASE_LEARNING_RATE = 0.1
BASE_BATCH_SIZE = 256
MOMENTUM = 0.9
PAPER_EPOCHS = 130
PAPER_WARMUP_EPOCHS = 10
PAPER_EMA_MOMENTUM = 0.9999
# Variables that decoupled weight decay leaves alone: batch norm's scale and offset and
# the biases (the usual ResNet practice).
NO_WEIGHT_DECAY = ("gamma", "beta", "bias")


def scaled_learning_rate(batch_size, base_learning_rate=BASE_LEARNING_RATE):
    """The peak learning rate for a global batch: `base_learning_rate` per 256 images.

    The paper's 1.6 at batch 4096 is this rule with the default 0.1.
    """
    return base_learning_rate * batch_size / BASE_BATCH_SIZE


def default_warmup_epochs(epochs):
    """The paper's share of warm-up: 10 of 130 epochs."""
    return epochs * PAPER_WARMUP_EPOCHS / PAPER_EPOCHS


def default_ema_momentum(total_steps):
    """EMA decay for a run of `total_steps` optimizer steps.

    The paper's 0.9999 averages over about 10,000 steps. Keras' EMA starts from the
    initial weights (no bias correction), so on a short run 0.9999 would evaluate weights
    close to the random initialisation. The decay is therefore capped to average over at
    most a tenth of the run: 0.9999 for ImageNet at batch 256 (650,000 steps), 0.99975
    at the paper's batch 4096 (40,000 steps), 0.985 for 660 steps, 0 (the weights
    themselves) below 11 steps.
    """
    return max(0.0, min(PAPER_EMA_MOMENTUM, 1.0 - 10.0 / max(1, total_steps)))


def default_batch_norm_momentum(total_steps):
    """Batch norm's moving-average momentum for a run of `total_steps` steps.

    The paper uses 0.9999 (ImageNet, 40,000 steps). Keras starts the moving variance at
    1 and the moving mean at 0, and they forget that start as momentum**steps: after
    660 steps at Keras' default 0.99 the start still weighs 0.1%, which swamps an
    activation variance of 0.003 (what the attention stem gives at initialisation), and
    the model evaluates at chance level while it trains well. The same cap as the EMA's
    (average over at most a tenth of the run) leaves e**-10 of the start at the end.
    """
    return default_ema_momentum(total_steps)


def _batch_norm_layers(model):
    import keras

    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from _batch_norm_layers(layer)
        elif isinstance(layer, keras.layers.BatchNormalization):
            yield layer


def set_batch_norm_momentum(model, momentum):
    """Sets `momentum` on every `BatchNormalization` layer of `model` (before training)."""
    for layer in _batch_norm_layers(model):
        layer.momentum = momentum
    return model


def initialize_batch_norm_statistics(model, images):
    """Sets the moving mean and variance of every batch norm layer to those of `images`.

    Keras starts them at 0 and 1, which is far from the statistics of some layers (the
    attention stem's outputs have a variance of about 0.003), so that evaluation is at
    chance level until the moving averages have forgotten their start. One forward pass
    in training mode with momentum 0 starts them at the statistics of a real batch.
    Call it before training, on one device (not inside a multi-replica strategy).
    """
    layers = list(_batch_norm_layers(model))
    momenta = [layer.momentum for layer in layers]
    try:
        for layer in layers:
            layer.momentum = 0.0
        model(images, training=True)
    finally:
        for layer, momentum in zip(layers, momenta, strict=True):
            layer.momentum = momentum


def learning_rate_schedule(learning_rate, total_steps, warmup_steps):
    """Linear warm-up from 0 to `learning_rate` over `warmup_steps`, then cosine decay to 0.

    Returns a `keras.optimizers.schedules.CosineDecay` (it holds both phases), which
    reaches 0 at `total_steps`.
    """
    import keras

    validation.positive_int("total_steps", total_steps, type_error=ValueError)
    if not 0 <= warmup_steps < total_steps:
        raise ValueError(
            "Invalid value for argument `warmup_steps`. Expected a warm-up that ends before "
            f"training does. Received: warmup_steps={warmup_steps}, total_steps={total_steps}"
        )
    if warmup_steps == 0:
        return keras.optimizers.schedules.CosineDecay(learning_rate, total_steps)
    return keras.optimizers.schedules.CosineDecay(
        0.0,
        total_steps - warmup_steps,
        warmup_target=learning_rate,
        warmup_steps=warmup_steps,
    )


def make_optimizer(
    learning_rate,
    momentum=MOMENTUM,
    weight_decay=0.0,
    ema_momentum=None,
):
    """SGD with Nesterov momentum, optional decoupled weight decay and weight EMA.

    Args:
        learning_rate: a float or a schedule (`learning_rate_schedule`).
        momentum: momentum of SGD.
        weight_decay: Keras' decoupled weight decay: each step multiplies every weight
            (batch norm parameters and biases excepted) by `1 - weight_decay * lr`. With
            momentum 0.9 this is about ten times weaker than the same coefficient given
            as an L2 penalty.
        ema_momentum: decay of the exponential moving average of the weights, or None
            for no EMA.

    Returns:
        A `keras.optimizers.SGD`.
    """
    import keras

    validation.number("weight_decay", weight_decay, low=0)
    use_ema = ema_momentum is not None
    optimizer = keras.optimizers.SGD(
        learning_rate=learning_rate,
        momentum=momentum,
        nesterov=True,
        weight_decay=weight_decay or None,
        use_ema=use_ema,
        ema_momentum=ema_momentum if use_ema else 0.99,
    )
    if weight_decay:
        optimizer.exclude_from_weight_decay(var_names=list(NO_WEIGHT_DECAY))
    return optimizer


def make_loss(label_smoothing=0.0):
    """Cross-entropy on one-hot labels and the model's softmax output."""
    import keras

    validation.number("label_smoothing", label_smoothing, low=0, high=1)
    return keras.losses.CategoricalCrossentropy(label_smoothing=label_smoothing)


def make_metrics(num_classes):
    """Top-1 accuracy (`accuracy`), and top-5 (`top5_accuracy`) beyond 10 classes."""
    import keras

    metrics = [keras.metrics.CategoricalAccuracy(name="accuracy")]
    if num_classes > 10:
        metrics.append(keras.metrics.TopKCategoricalAccuracy(5, name="top5_accuracy"))
    return metrics


def uses_ema(optimizer):
    """Whether `optimizer` keeps an EMA of the weights.

    Under `mixed_float16` `Model.compile` wraps the optimizer in a
    `keras.optimizers.LossScaleOptimizer`, whose own `use_ema` is always False: the
    wrapped optimizer (`inner_optimizer`) is the one that keeps the EMA.
    """
    inner = getattr(optimizer, "inner_optimizer", None)
    if inner is not None:
        return uses_ema(inner)
    return bool(getattr(optimizer, "use_ema", False))


def ema_callbacks(optimizer):
    """`[SwapEMAWeights()]` when the optimizer keeps an EMA (`uses_ema`), so that
    validation during `fit` uses the EMA weights; else `[]`."""
    import keras

    return [keras.callbacks.SwapEMAWeights()] if uses_ema(optimizer) else []


def separate_variable_buffers(optimizer):
    """Gives each of the optimizer's variables a buffer of its own, after `fit`.

    At the end of `fit` Keras copies the EMA weights into the model with `assign`, which
    on JAX makes each weight and its average share one array; the next `evaluate`
    donates the weights' arrays to XLA and the averages are left deleted ("Array has been
    deleted" when the model is saved). Found with Keras 3.15 / JAX 0.10. TensorFlow
    copies on assign: nothing to do there.
    """
    import keras

    if keras.backend.backend() == "tensorflow":
        return
    for variable in optimizer.variables:
        variable.assign(keras.ops.convert_to_numpy(variable))


def steps(epochs, steps_per_epoch):
    """Total optimizer steps of a run."""
    return int(epochs) * int(steps_per_epoch)


def warmup_steps(warmup_epochs, steps_per_epoch):
    """Steps of warm-up for a possibly fractional number of epochs."""
    return int(math.floor(warmup_epochs * steps_per_epoch + 0.5))


def check_steps_taken(optimizer, config, steps_per_epoch, run_dir, log=print):
    """Says how many training steps a `LossScaleOptimizer` skipped; refuses a run with none.

    Under `mixed_float16` Keras' `LossScaleOptimizer` skips every step whose gradients
    overflow in float16, halving its loss scale (2**15 at first) each time: the first
    few steps of a run are skipped. The optimizer's `iterations`, which drive the
    learning rate schedule and the EMA, count only the steps taken, so the schedule ends
    the run that many steps short of its end (above 0). It is not made to count the
    skipped steps as well: Keras' EMA starts its average from the weights at iteration
    0, and counting skipped steps would start it from zeros instead. A run whose steps
    were all skipped would report (and save) the EMA's zero-initialised average as its
    model: it is refused.

    Returns:
        The number of steps skipped (0 without loss scaling), which results.json keeps.

    Raises:
        ValueError: no step was taken.
    """
    import keras

    planned = steps(config.epochs, steps_per_epoch)
    taken = int(keras.ops.convert_to_numpy(optimizer.iterations))
    if taken == 0:
        raise ValueError(
            f"{run_dir}: none of the {planned} training steps was taken: under "
            f"{config.mixed_precision} the gradients overflowed at every step (loss scaling "
            "skips those steps), so the model is untrained. Train for more steps or with "
            "--mixed-precision mixed_bfloat16, after deleting this directory."
        )
    if taken < planned:
        learning_rate = float(keras.ops.convert_to_numpy(optimizer.learning_rate))
        log(
            f"{run_dir}: {planned - taken} of {planned} training steps were skipped "
            f"(gradients overflowed under {config.mixed_precision}; loss scaling skips those "
            f"steps); the learning rate schedule follows the {taken} steps taken and ended "
            f"at {learning_rate:.3g}."
        )
    return max(planned - taken, 0)
