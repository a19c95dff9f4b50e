"""`TrainConfig`: everything a training run depends on, and the defaults filled in from the data.

Fields left at None are chosen by `resolve` once the data set is known:

- large images (ImageNet, Imagenette; model input over 64 pixels): the paper's recipe at a
  batch one machine can hold: 224 x 224, the `attention` stem, width 64, k = 7, 8 heads,
  130 epochs, batch 256 and learning rate 0.1 (the paper's 1.6 per 4096).
- small images (digits, MNIST, CIFAR; input of at most 64 pixels): the native size, the
  `conv_small` stem followed by attention in every group (the paper's "conv stem +
  attention" of Table 1), 2 heads, and a narrow, short run, so that the default command
  finishes in a few minutes on two CPU cores (`SMALL_IMAGE_DEFAULTS`; the evidence for
  each choice: docs/small_images.md).

Each field's metadata also holds the bounds `check` applies and the `train` command's
flag (group, help, choices): `keras_sasa.cli` builds the flags from the fields, before
Keras starts, so this module imports the model and data modules only where it uses them.
"""

import dataclasses
import os
import re
from typing import Optional, Tuple, Union

from keras_sasa import _validation as validation
from keras_sasa._choices import MIXED_PRECISION
from keras_sasa._choices import STEMS
from keras_sasa._choices import STRATEGIES
from keras_sasa.training import recipe

# The paper's ImageNet settings, at a global batch of 256 (learning rate 0.1), and its
# 224 x 224 input (`keras_sasa.data.augment.DEFAULT_LARGE_IMAGE_SIZE`).
LARGE_IMAGE_DEFAULTS = {
    "stem": "attention",
    "stage_strides": (1, 2, 2, 2),
    "kernel_size": 7,
    "base_width": 64,
    "num_heads": 8,
    "epochs": recipe.PAPER_EPOCHS,
    "batch_size": 256,
}
# Small images (evidence and commands: docs/small_images.md): the stem, window and heads
# are the best trial of a search with `python -m keras_sasa tune` on digits (ranked
# trials in benchmarks/results/digits_search/): the conv stem gives the
# attention body features to attend with, and every conv-stem trial beat every
# attention-stem one. The window is 3 x 3: on the 8 x 8 and 4 x 4 maps of digits it
# already spans most of the map, and over three seeds on the held-out split it tied with
# 7 x 7 while learning faster and fitting the training set better
# (benchmarks/results/digits_window_selection/). `SASAResNet` cuts a
# window to what a small map reaches. The groups' strides are (1, 1, 2, 2): the 8 x 8
# digits then reach groups 1-4 at 8, 8, 4 and 2 pixels a side, and no attention layer
# works on a map under 4 x 4. With the ImageNet strides (1, 2, 2, 2) five of the eight
# attention layers see 2 x 2 maps, where attention costs about a point of held-out
# accuracy against convolutions (benchmarks/results/digits_screening/recipe.jsonl).
SMALL_IMAGE_DEFAULTS = {
    "stem": "conv_small",
    "stage_strides": (1, 1, 2, 2),
    "kernel_size": 3,
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


# The bounds of momenta and shares: [0, 1).
_FRACTION = {"low": 0, "high": 1}

# The largest counts and sizes a run takes; larger ones are refused, saying why.
# Every epoch's pipeline is built when a run starts (`data.load_dataset(initial_epoch=...)`,
# so that a resumed run reads what an uninterrupted one did), in a time that grows faster
# than the number of epochs: minutes for 1,000 (benchmarks/epoch_pipelines.py). The paper
# trains for 130.
MAX_EPOCHS = 1000
# Layer outputs grow with the square of the side: at 4,096 pixels one image's are
# (4096 / 224)**2 = 334 times those of an ImageNet image, tens of gigabytes per image.
MAX_IMAGE_SIZE = 4096
# Weights grow with the square of the width: at 1,024, 256 times the paper's width 64,
# SASA-ResNet-26 has over 2 billion parameters.
MAX_BASE_WIDTH = 1024
# ImageNet has been trained with batches of up to 65,536 images.
MAX_BATCH_SIZE = 65536
# A compiled call never spans epochs, and an ImageNet epoch at batch 256 has 5,005 steps.
MAX_STEPS_PER_EXECUTION = 10_000
# Seeds go to NumPy (`keras.utils.set_random_seed`), which takes 0 .. 2**32 - 1.
MAX_SEED = 2**32 - 1


def _defaults(name, paper=False):
    """ "default: 8; 2 for small images": a field's help, from the defaults above."""
    large, small = LARGE_IMAGE_DEFAULTS[name], SMALL_IMAGE_DEFAULTS[name]
    text = f"default: {large}{' (paper)' if paper else ''}"
    return text if large == small else f"{text}; {small} for small images"


def _field(
    default,
    group=None,
    help=None,
    low=None,
    high=None,
    low_open=False,
    high_open=True,
    why=None,
    **flag,
):
    """A `TrainConfig` field: its default, the bounds `check` holds a number to
    ([low, high), or (low, high) with `low_open`, [low, high] without `high_open`; `why`
    a larger value is refused), and its command line flag: a field with a `group` is a
    flag of `train` in that group of the help, with this `help`, the word that stands for
    None (`none_word`), and any other `flag` arguments of `ArgumentParser.add_argument`
    (choices, metavar)."""
    bounds = None
    if low is not None:
        bounds = dict(low=low, high=high, low_open=low_open, high_open=high_open, why=why)
    none_word = flag.pop("none_word", None)
    metadata = {"group": group, "help": help, "bounds": bounds, "none_word": none_word}
    return dataclasses.field(default=default, metadata={**metadata, "flag": flag})


@dataclasses.dataclass
class TrainConfig:
    """A training run. None means "chosen by `resolve`" (see the module docstring).

    Attributes:
        dataset: "digits" (offline), a TFDS image classification data set name, or the
            path of a folder of images with one subfolder per class (`data.folder`).
        data_dir: TFDS data directory (TFDS's default if None).
        train_split, test_split: TFDS splits, slices allowed ("train[:256]"). Default:
            the data set's training split and its labelled evaluation split.
        model: a name of `keras_sasa.models.MODELS` ("sasa_resnet26", ...).
        stem: one of `keras_sasa.models.resnet.STEMS`; None: "attention" (the paper's)
            for large inputs, "conv_small" for inputs of at most 64 pixels.
        attention_stages: groups (1..4) that use attention; None: all; () gives the
            convolutional baseline.
        stage_strides: the downsampling of each group's first block
            (`SASAResNet(stackwise_strides=...)`); None: (1, 2, 2, 2), or (1, 1, 2, 2) for
            small images.
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

    dataset: str = _field(
        "digits",
        "data",
        "'digits', a TFDS image classification data set, or a folder of images with one "
        "subfolder per class (default: digits, needs no download)",
    )
    data_dir: Optional[str] = _field(None, "data", "TFDS data directory (default: TFDS's)")
    train_split: Optional[str] = _field(
        None,
        "data",
        "TFDS split to train on, slices allowed (e.g. 'train[:256]'; default: the training split)",
    )
    test_split: Optional[str] = _field(
        None, "data", "TFDS split to evaluate on (default: the labelled test or validation split)"
    )
    model: str = _field(
        "sasa_resnet26", "model", "sasa_resnet26|38|50|101|152 (default: sasa_resnet26)"
    )
    stem: Optional[str] = _field(
        None,
        "model",
        "auto|attention|conv|attention_small|conv_small (default: auto: "
        f"{LARGE_IMAGE_DEFAULTS['stem']}, or {SMALL_IMAGE_DEFAULTS['stem']} for images <= 64 "
        "pixels)",
        none_word="auto",
    )
    attention_stages: Optional[Tuple[int, ...]] = _field(
        None,
        "model",
        "groups using attention, e.g. 2,3,4 or none (default: 1,2,3,4)",
        metavar="GROUPS",
    )
    stage_strides: Optional[Tuple[int, ...]] = _field(
        None,
        "model",
        "stride of each group's first block (default: "
        f"{','.join(map(str, LARGE_IMAGE_DEFAULTS['stage_strides']))}; "
        f"{','.join(map(str, SMALL_IMAGE_DEFAULTS['stage_strides']))} for small images)",
        metavar="STRIDES",
    )
    kernel_size: Optional[int] = _field(
        None, "model", f"spatial extent k of the attention ({_defaults('kernel_size')})", low=1
    )
    num_heads: Optional[int] = _field(
        None, "model", f"attention heads ({_defaults('num_heads')})", low=1
    )
    base_width: Optional[int] = _field(
        None,
        "model",
        f"width of the stem and group 1 ({_defaults('base_width')})",
        low=1,
        high=MAX_BASE_WIDTH,
        high_open=False,
        why="wider models do not fit in memory",
    )
    use_relative_position: bool = True
    image_size: Optional[int] = _field(
        None,
        "data",
        "side of the model input (default: native for images <= 64 pixels, else 224)",
        low=1,
        high=MAX_IMAGE_SIZE,
        high_open=False,
        why="larger images do not fit in memory",
    )
    epochs: Optional[int] = _field(
        None,
        "recipe",
        _defaults("epochs", paper=True),
        low=1,
        high=MAX_EPOCHS,
        high_open=False,
        why="the run builds every epoch's data pipeline when it starts",
    )
    batch_size: Optional[int] = _field(
        None,
        "recipe",
        f"global batch size ({_defaults('batch_size')})",
        low=1,
        high=MAX_BATCH_SIZE,
        high_open=False,
        why="the largest batches ImageNet has been trained with",
    )
    learning_rate: Optional[float] = _field(
        None,
        "recipe",
        f"peak learning rate (default: {recipe.BASE_LEARNING_RATE} x batch size / "
        f"{recipe.BASE_BATCH_SIZE})",
        low=0,
        low_open=True,
    )
    warmup_epochs: Optional[float] = _field(
        None,
        "recipe",
        f"linear warm-up (default: {recipe.PAPER_WARMUP_EPOCHS}/{recipe.PAPER_EPOCHS} of the "
        "epochs, as in the paper)",
        low=0,
    )
    weight_decay: float = _field(0.0, "recipe", "decoupled weight decay of SGD (default: 0)", low=0)
    label_smoothing: float = _field(0.0, "recipe", "label smoothing (default: 0)", **_FRACTION)
    momentum: float = _field(
        recipe.MOMENTUM,
        "recipe",
        f"Nesterov momentum (default: {recipe.MOMENTUM})",
        **_FRACTION,
    )
    ema: bool = _field(True, "recipe", "keep and evaluate an EMA of the weights (default: on)")
    ema_momentum: Optional[float] = _field(
        None,
        "recipe",
        f"EMA decay (default: {recipe.PAPER_EMA_MOMENTUM}, less for short runs)",
        **_FRACTION,
    )
    batch_norm_momentum: Optional[float] = _field(
        None,
        "recipe",
        "momentum of batch norm's moving statistics (default: "
        f"{recipe.PAPER_EMA_MOMENTUM}, less for short runs)",
        **_FRACTION,
    )
    output_dir: Optional[str] = _field(
        None,
        "run",
        "results, history, logs, checkpoints, model (default: runs/<dataset>_<model>)",
    )
    seed: int = _field(
        0, "recipe", "default: 0", low=0, high=MAX_SEED, high_open=False, why="NumPy's limit"
    )
    mixed_precision: str = _field("none", "run", choices=MIXED_PRECISION)
    jit_compile: Union[bool, str] = _field(
        "auto", "run", "XLA (default: Keras' choice: on for GPUs, off on CPUs)"
    )
    steps_per_execution: Union[int, str] = _field(
        "auto",
        "run",
        "training steps per compiled call (default: 1; 32 on TPUs)",
        low=1,
        high=MAX_STEPS_PER_EXECUTION,
        high_open=False,
        why="a compiled call never spans epochs",
    )
    strategy: str = _field(
        "auto", "run", "tf.distribute strategy (default: auto)", choices=STRATEGIES
    )
    tpu: Optional[str] = _field(None, "run", "TPU name or grpc:// address ('local' on a TPU VM)")
    compare_baseline: bool = _field(
        False,
        "run",
        "also train the conv baseline of the same depth (in OUTPUT_DIR/baseline) and print "
        "both side by side",
    )
    verbose: Union[int, str] = "auto"
    validation_split: Optional[float] = _field(
        None,
        "recipe",
        "share of the training split held out for the per-epoch val_* columns, e.g. 0.1 "
        "(default: none: val_* is computed on the test split)",
        none_word="none",
    )

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)

    def to_dict(self):
        values = dataclasses.asdict(self)
        for name in ("attention_stages", "stage_strides"):
            if values[name] is not None:
                values[name] = list(values[name])
        return values

    def run_fields(self):
        """The fields that define what is trained (a resumed run must match them)."""
        values = self.to_dict()
        return {k: v for k, v in values.items() if k not in _RUN_ONLY_FIELDS}


def check(config):
    """Raises ValueError (TypeError) for values no data set makes valid, and for the
    set fields that the model builders would refuse together (`check_model`); names the
    field and its value."""
    # Imported here: this module is read by the command line before Keras starts.
    from keras_sasa.models import MODELS

    if config.data_dir is not None and os.path.isfile(config.data_dir):
        # TFDS would fail later on a path inside it ("Not a directory: '.../downloads'").
        raise validation.error(
            "data_dir",
            config.data_dir,
            "Expected a directory (TFDS's data directory, created if missing), not a file",
        )
    validation.one_of("model", config.model, tuple(MODELS))
    if config.stem is not None:
        validation.one_of("stem", config.stem, STEMS)
    for field in dataclasses.fields(config):
        value, bounds = getattr(config, field.name), field.metadata.get("bounds")
        if bounds is None or value is None or value == "auto":
            continue
        if field.type in (Optional[int], int, Union[int, str]):
            validation.integer(field.name, value, type_error=ValueError)
        validation.number(field.name, value, **bounds)
    if config.kernel_size is not None:
        validation.odd_kernel_size("kernel_size", config.kernel_size, type_error=ValueError)
    validation.boolean("use_relative_position", config.use_relative_position)
    validation.one_of("mixed_precision", config.mixed_precision, MIXED_PRECISION)
    validation.one_of("strategy", config.strategy, STRATEGIES)
    if config.validation_split is not None:
        check_validation_split(config.validation_split, config.train_split)
    if config.attention_stages is not None:
        validation.attention_stages("attention_stages", config.attention_stages)
    if config.stage_strides is not None:
        validation.stage_strides("stage_strides", config.stage_strides)
    return check_model(config)


def check_model(config):
    """Raises ValueError where the model builders would refuse the fields that are set
    (all of them once resolved): heads that do not divide an attention layer's width,
    a width that the attention stem's heads do not divide, or images smaller than the
    stem and the groups downsample them by. `check` runs it on the fields given, `train`
    again on the resolved config, before anything is built."""
    from keras_sasa.models import min_input_size
    from keras_sasa.models import stem_heads

    stages = (1, 2, 3, 4) if config.attention_stages is None else config.attention_stages
    if config.num_heads is not None and config.base_width is not None:
        for group in stages:
            width = config.base_width * 2 ** (group - 1)  # `SASAResNet`'s group widths
            if width % config.num_heads:
                raise validation.error(
                    "num_heads",
                    config.num_heads,
                    f"Expected heads that divide the width of every attention layer: group "
                    f"{group} is {width} wide (base_width={config.base_width})",
                )
    heads = None if config.stem is None else stem_heads(config.stem)
    if heads is not None and config.base_width is not None and config.base_width % heads:
        raise validation.error(
            "base_width",
            config.base_width,
            f"Expected a multiple of the {config.stem!r} stem's {heads} attention heads",
        )
    if None not in (config.stem, config.stage_strides, config.image_size):
        min_size = min_input_size(config.stem, config.stage_strides)
        if config.image_size < min_size:
            raise validation.error(
                "image_size",
                config.image_size,
                f"Expected at least {min_size}: the {config.stem!r} stem and the groups "
                f"(strides {config.stage_strides}) downsample the images by {min_size}",
            )
    return config


def check_validation_split(validation_split, train_split=None):
    """Raises ValueError (TypeError) unless `validation_split` can be carved out of
    `train_split` by TFDS's whole-percent slicing."""
    validation.number("validation_split", validation_split)
    # TFDS slices by whole percents: both parts must keep at least 1%.
    if not 0.005 <= validation_split < 0.995:
        raise validation.error(
            "validation_split", validation_split, "Expected a value in [0.01, 0.99]"
        )
    if train_split is not None and "[" in train_split:
        raise validation.error(
            "validation_split",
            validation_split,
            f"Expected none: the training split {train_split!r} is already a slice; choose "
            "both the training and the validation splits instead",
        )
    return validation_split


def held_out_splits(train_split, validation_split):
    """`(fit_split, held_out_split)`: `train_split` without and with its last
    `validation_split` share, as TFDS percent slices ("train[:80%]", "train[80%:]")."""
    percent = round(100 * (1 - validation_split))
    return f"{train_split}[:{percent}%]", f"{train_split}[{percent}%:]"


def is_small(image_size):
    """Inputs of at most 64 pixels get the small stems (no 4x downsampling)."""
    from keras_sasa.data import augment

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

    Raises:
        ValueError: a field `check` refuses, or a warm-up as long as the training.
    """
    from keras_sasa.data import augment

    check(config)
    height, width, _ = info.image_shape
    image_size = config.image_size
    if image_size is None:
        native = height if height is not None and height == width else None
        if native is not None and is_small(native):
            image_size = native
        else:
            image_size = augment.DEFAULT_LARGE_IMAGE_SIZE
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
        stage_strides=tuple(pick("stage_strides")),
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
        raise validation.error(
            "warmup_epochs",
            resolved.warmup_epochs,
            f"Expected a warm-up shorter than the training ({resolved.epochs} epochs)",
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
