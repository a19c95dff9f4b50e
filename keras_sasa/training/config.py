"""`TrainConfig`: everything a training run depends on, and the defaults filled in from the data.

Fields left at None are chosen by `resolve` once the data set is known:

- large images (ImageNet, Imagenette; model input over 64 pixels): the paper's recipe at a
  batch one machine can hold: 224 x 224, the `attention` stem, width 64, k = 7, 8 heads,
  130 epochs, batch 256 and learning rate 0.1 (the paper's 1.6 per 4096).
- small images (digits, MNIST, CIFAR; input of at most 64 pixels): the native size, the
  `conv_small` stem followed by attention in every group (the paper's "conv stem +
  attention" of Table 1), 2 heads, and a narrow, short run, so that the default command
  finishes in a few minutes on two CPU cores (`SMALL_IMAGE_DEFAULTS`, chosen by the
  search in `benchmarks/results/digits_search/`).
"""

import dataclasses
import numbers
import os
import re
from typing import Optional, Tuple, Union

from keras_sasa.data import augment
from keras_sasa.models import MODELS
from keras_sasa.models.resnet import STEMS
from keras_sasa.training import recipe

MIXED_PRECISION = ("none", "mixed_float16", "mixed_bfloat16")
STRATEGIES = ("auto", "default", "mirrored", "multi_worker", "tpu")

# The paper's ImageNet settings, at a global batch of 256 (learning rate 0.1).
LARGE_IMAGE_DEFAULTS = {
    "image_size": augment.DEFAULT_LARGE_IMAGE_SIZE,
    "stem": "attention",
    "kernel_size": 7,
    "base_width": 64,
    "num_heads": 8,
    "epochs": recipe.PAPER_EPOCHS,
    "batch_size": 256,
}
# Small images: the stem, window and heads are the best trial of a search with
# `python -m keras_sasa tune` on digits (benchmarks/digits_search.sh; its settings and
# ranked trials are in benchmarks/results/digits_search/): the conv stem gives the
# attention body features to attend with, and every conv-stem trial beat every
# attention-stem one. The window is the paper's 7 x 7; on the 2 x 2 and 1 x 1 maps of
# groups 3 and 4 `SASAResNet` cuts it to what the maps reach.
SMALL_IMAGE_DEFAULTS = {
    "stem": "conv_small",
    "kernel_size": 7,
    "base_width": 16,
    "num_heads": 2,
    "epochs": 30,
    "batch_size": 64,
}

# Fields that do not change what is trained: a run may be resumed with other values.
_RUN_ONLY_FIELDS = (
    "data_dir",
    "output_dir",
    "jit_compile",
    "steps_per_execution",
    "strategy",
    "tpu",
    "compare_baseline",
    "verbose",
)


@dataclasses.dataclass
class TrainConfig:
    """A training run. None means "chosen by `resolve`" (see the module docstring).

    Attributes:
        dataset: "digits" (offline) or a TFDS image classification data set name.
        data_dir: TFDS data directory (TFDS's default if None).
        train_split, test_split: TFDS splits, slices allowed ("train[:256]"). Default:
            the data set's training split and its labelled evaluation split.
        model: a name of `keras_sasa.models.MODELS` ("sasa_resnet26", ...).
        stem: one of `keras_sasa.models.resnet.STEMS`; None: "attention" (the paper's)
            for large inputs, "conv_small" for inputs of at most 64 pixels.
        attention_stages: groups (1..4) that use attention; None: all; () gives the
            convolutional baseline.
        kernel_size: spatial extent k of the attention; None: 7 (the paper's).
        num_heads, base_width: heads of every attention layer, width of group 1.
        use_relative_position: the attention layers' relative position embeddings
            (False: no positional encoding, the paper's Table 5 "none").
        image_size: side of the square model input; None: native (small images) or 224.
        epochs, batch_size: training epochs and global batch size.
        learning_rate: peak learning rate; None: 0.1 per 256 images of the batch.
        warmup_epochs: linear warm-up; None: 10/130 of the epochs, as in the paper.
        weight_decay: decoupled weight decay (`keras.optimizers.SGD(weight_decay=...)`).
        label_smoothing: label smoothing of the cross-entropy.
        momentum: Nesterov momentum.
        ema: keep an exponential moving average of the weights and evaluate it.
        ema_momentum: its decay; None: `recipe.default_ema_momentum` of the run's steps.
        batch_norm_momentum: momentum of batch norm's moving statistics; None:
            `recipe.default_batch_norm_momentum` of the run's steps.
        output_dir: where results, logs, checkpoints and the model go; None:
            "runs/<dataset>_<model>".
        seed: seed of the weights' initialisation, shuffling and augmentation.
        mixed_precision: "none", "mixed_float16" or "mixed_bfloat16".
        jit_compile, steps_per_execution: for `Model.compile`, through
            `keras_sasa.distribute.fit_options` ("auto", or True/False and an integer).
        strategy, tpu: for `keras_sasa.distribute.get_strategy`.
        compare_baseline: also train the convolutional baseline of the same depth
            (`stem` "conv"/"conv_small", no attention) with the same recipe.
        verbose: Keras' verbosity of `fit`; "auto": progress bars on a terminal, one line
            per epoch otherwise.
        validation_split: share of the training split (whole percents, 0.01..0.99) held
            out for the per-epoch `val_*` columns; the model trains on the rest. None:
            the `val_*` columns are computed on the test split. The final test
            evaluation always uses the test split.
    """

    dataset: str = "digits"
    data_dir: Optional[str] = None
    train_split: Optional[str] = None
    test_split: Optional[str] = None
    model: str = "sasa_resnet26"
    stem: Optional[str] = None
    attention_stages: Optional[Tuple[int, ...]] = None
    kernel_size: Optional[int] = None
    num_heads: Optional[int] = None
    base_width: Optional[int] = None
    use_relative_position: bool = True
    image_size: Optional[int] = None
    epochs: Optional[int] = None
    batch_size: Optional[int] = None
    learning_rate: Optional[float] = None
    warmup_epochs: Optional[float] = None
    weight_decay: float = 0.0
    label_smoothing: float = 0.0
    momentum: float = recipe.MOMENTUM
    ema: bool = True
    ema_momentum: Optional[float] = None
    batch_norm_momentum: Optional[float] = None
    output_dir: Optional[str] = None
    seed: int = 0
    mixed_precision: str = "none"
    jit_compile: Union[bool, str] = "auto"
    steps_per_execution: Union[int, str] = "auto"
    strategy: str = "auto"
    tpu: Optional[str] = None
    compare_baseline: bool = False
    verbose: Union[int, str] = "auto"
    validation_split: Optional[float] = None

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)

    def to_dict(self):
        values = dataclasses.asdict(self)
        if values["attention_stages"] is not None:
            values["attention_stages"] = list(values["attention_stages"])
        return values

    def run_fields(self):
        """The fields that define what is trained (a resumed run must match them)."""
        values = self.to_dict()
        return {k: v for k, v in values.items() if k not in _RUN_ONLY_FIELDS}


def check(config):
    """Raises ValueError for values no data set makes valid; names the field."""
    if config.data_dir is not None and os.path.isfile(config.data_dir):
        # TFDS would fail later on a path inside it ("Not a directory: '.../downloads'").
        raise ValueError(
            f"Invalid value for `data_dir`: {config.data_dir!r} is a file; expected a "
            "directory (TFDS's data directory, created if missing)."
        )
    if config.model not in MODELS:
        raise ValueError(f"Unknown model {config.model!r}. Expected one of: {', '.join(MODELS)}.")
    if config.stem is not None and config.stem not in STEMS:
        raise ValueError(f"Unknown stem {config.stem!r}. Expected one of: {', '.join(STEMS)}.")
    for name in ("epochs", "batch_size", "kernel_size", "num_heads", "base_width", "image_size"):
        value = getattr(config, name)
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int) or value < 1
        ):
            raise ValueError(
                f"Invalid value for `{name}`: expected a positive integer, got {value!r}."
            )
    if config.learning_rate is not None and not config.learning_rate > 0:
        raise ValueError(
            f"Invalid value for `learning_rate`: expected > 0, got {config.learning_rate}."
        )
    if config.warmup_epochs is not None and not config.warmup_epochs >= 0:
        raise ValueError(
            f"Invalid value for `warmup_epochs`: expected >= 0, got {config.warmup_epochs}."
        )
    if not config.weight_decay >= 0:
        raise ValueError(
            f"Invalid value for `weight_decay`: expected >= 0, got {config.weight_decay}."
        )
    if not 0 <= config.label_smoothing < 1:
        raise ValueError(
            "Invalid value for `label_smoothing`: expected a value in [0, 1), got "
            f"{config.label_smoothing}."
        )
    if not 0 <= config.momentum < 1:
        raise ValueError(
            f"Invalid value for `momentum`: expected a value in [0, 1), got {config.momentum}."
        )
    if config.ema_momentum is not None and not 0 <= config.ema_momentum < 1:
        raise ValueError(
            "Invalid value for `ema_momentum`: expected a value in [0, 1), got "
            f"{config.ema_momentum}."
        )
    if config.batch_norm_momentum is not None and not 0 <= config.batch_norm_momentum < 1:
        raise ValueError(
            "Invalid value for `batch_norm_momentum`: expected a value in [0, 1), got "
            f"{config.batch_norm_momentum}."
        )
    if not isinstance(config.use_relative_position, bool):
        raise TypeError(
            "Invalid type for `use_relative_position`: expected a bool, got "
            f"{config.use_relative_position!r}."
        )
    if config.mixed_precision not in MIXED_PRECISION:
        raise ValueError(
            f"Invalid value for `mixed_precision`: expected one of {', '.join(MIXED_PRECISION)}, "
            f"got {config.mixed_precision!r}."
        )
    if config.strategy not in STRATEGIES:
        raise ValueError(
            f"Invalid value for `strategy`: expected one of {', '.join(STRATEGIES)}, got "
            f"{config.strategy!r}."
        )
    if config.validation_split is not None:
        check_validation_split(config.validation_split, config.train_split)
    if config.attention_stages is not None:
        for group in config.attention_stages:
            if isinstance(group, bool) or not isinstance(group, int) or not 1 <= group <= 4:
                raise ValueError(
                    "Invalid value for `attention_stages`: expected group numbers 1..4, got "
                    f"{tuple(config.attention_stages)!r}."
                )
    return config


def check_validation_split(validation_split, train_split=None):
    """Raises ValueError (TypeError) unless `validation_split` can be carved out of
    `train_split` by TFDS's whole-percent slicing."""
    if isinstance(validation_split, bool) or not isinstance(validation_split, numbers.Real):
        raise TypeError(
            "Invalid type for `validation_split`: expected a float in (0, 1) or None, "
            f"got {validation_split!r}."
        )
    # TFDS slices by whole percents: both parts must keep at least 1%.
    if not 0.005 <= validation_split < 0.995:
        raise ValueError(
            "Invalid value for `validation_split`: expected a value in [0.01, 0.99], "
            f"got {validation_split}."
        )
    if train_split is not None and "[" in train_split:
        raise ValueError(
            "Invalid value for `validation_split`: the training split "
            f"{train_split!r} is already a slice; choose both the training and the "
            "validation splits instead."
        )
    return validation_split


def held_out_splits(train_split, validation_split):
    """`(fit_split, held_out_split)`: `train_split` without and with its last
    `validation_split` share, as TFDS percent slices ("train[:80%]", "train[80%:]")."""
    percent = round(100 * (1 - validation_split))
    return f"{train_split}[:{percent}%]", f"{train_split}[{percent}%:]"


def is_small(image_size):
    """Inputs of at most 64 pixels get the small stems (no 4x downsampling)."""
    return image_size <= augment.SMALL_IMAGE_MAX_SIDE


def resolve(config, info):
    """`config` with every None field chosen for the data set described by `info`.

    Args:
        config: a `TrainConfig`.
        info: the data set's `keras_sasa.data.ImageDatasetInfo`.

    Returns:
        A new `TrainConfig` without None fields, except `data_dir`, `tpu`, and
        `ema_momentum` and `batch_norm_momentum`, which depend on the steps per epoch
        (`keras_sasa.training.with_run_length` fills them in).
    """
    check(config)
    height, width, _ = info.image_shape
    image_size = config.image_size
    if image_size is None:
        native = height if height is not None and height == width else None
        if native is not None and is_small(native):
            image_size = native
        else:
            image_size = LARGE_IMAGE_DEFAULTS["image_size"]
    small = is_small(image_size)
    defaults = SMALL_IMAGE_DEFAULTS if small else LARGE_IMAGE_DEFAULTS

    def pick(name):
        value = getattr(config, name)
        return defaults[name] if value is None else value

    epochs = pick("epochs")
    batch_size = pick("batch_size")
    resolved = config.replace(
        train_split=config.train_split or info.train_split,
        test_split=config.test_split or info.eval_split,
        stem=pick("stem"),
        kernel_size=pick("kernel_size"),
        attention_stages=(
            (1, 2, 3, 4)
            if config.attention_stages is None
            else tuple(sorted(set(config.attention_stages)))
        ),
        num_heads=pick("num_heads"),
        base_width=pick("base_width"),
        image_size=image_size,
        epochs=epochs,
        batch_size=batch_size,
        learning_rate=(
            recipe.scaled_learning_rate(batch_size)
            if config.learning_rate is None
            else config.learning_rate
        ),
        warmup_epochs=(
            recipe.default_warmup_epochs(epochs)
            if config.warmup_epochs is None
            else config.warmup_epochs
        ),
        output_dir=config.output_dir or default_output_dir(config.dataset, config.model),
    )
    if resolved.warmup_epochs >= resolved.epochs:
        raise ValueError(
            f"Invalid value for `warmup_epochs`: the warm-up ({resolved.warmup_epochs} epochs) "
            f"must be shorter than the training ({resolved.epochs} epochs)."
        )
    return resolved


def baseline(config):
    """The convolutional baseline of a resolved config: same depth, width and recipe, the
    convolution stem of the same input size, no attention."""
    small = config.stem in ("attention_small", "conv_small")
    return config.replace(
        stem="conv_small" if small else "conv",
        attention_stages=(),
        compare_baseline=False,
    )


def default_output_dir(dataset, model):
    """ "runs/<dataset>_<model>", the data set name made a plain file name."""
    return f"runs/{re.sub(r'[^A-Za-z0-9_.-]+', '_', dataset)}_{model}"
