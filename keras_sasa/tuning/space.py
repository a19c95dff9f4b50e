"""`SearchSpace`: the hyperparameters a search tries, drawn from the paper's ablations.

Ramachandran et al. 2019 vary the spatial extent k (Table 4: 3, 5, 7, 9, 11), the stem
(Table 7), which groups use attention (Table 3) and the positional encoding (Table 5);
the number of heads N, the width and the training recipe (learning rate, weight decay,
label smoothing) complete the space. Each field is either a set of choices or a range, and
each can be narrowed or fixed: `SearchSpace(kernel_size=(3, 5), num_heads=4,
learning_rate=(1e-3, 1e-1))`.

The field names are those of `keras_sasa.training.TrainConfig`, so a trial's values give
the configuration that trains it (`config_for`).
"""

import dataclasses
import numbers
from typing import Optional, Tuple

from keras_sasa import _validation as validation
from keras_sasa._choices import STEMS
from keras_sasa.training import recipe
from keras_sasa.training.config import LARGE_IMAGE_DEFAULTS
from keras_sasa.training.config import SMALL_IMAGE_DEFAULTS
from keras_sasa.training.config import is_small

# Table 4 of the paper.
PAPER_KERNEL_SIZES = (3, 5, 7, 9, 11)
PAPER_NUM_HEADS = (1, 2, 4, 8)
# Table 3: attention in every group, or from group 2, 3 or 4 on (conv before).
PAPER_ATTENTION_STAGES = ((1, 2, 3, 4), (2, 3, 4), (3, 4), (4,))
DEFAULT_BASE_WIDTHS = (16, 32, 64)
DEFAULT_WEIGHT_DECAY = (0.0, 1e-3)
DEFAULT_LABEL_SMOOTHING = (0.0, 0.2)
# Without a learning rate range: this factor either side of the batch's default rate
# (0.1 per 256 images).
LEARNING_RATE_FACTOR = 4.0
# The default stems: those without downsampling (`models.stem_reduction` 1) for small
# images, the others otherwise. Spelled out so that `tune --help` needs no Keras; a test
# checks them against the models.
SMALL_STEMS = ("attention_small", "conv_small")
LARGE_STEMS = ("attention", "conv")

CHOICE_FIELDS = (
    "kernel_size",
    "num_heads",
    "stem",
    "attention_stages",
    "stage_strides",
    "use_relative_position",
    "base_width",
)
RANGE_FIELDS = ("learning_rate", "weight_decay", "label_smoothing")
# Choice fields whose choices are tuples of integers, held by keras-tuner as "2,3,4".
SET_FIELDS = ("attention_stages", "stage_strides")
FIELDS = CHOICE_FIELDS + RANGE_FIELDS


def _field(default, flag, metavar, help):
    """A `SearchSpace` field and its flag of the `tune` command (a list "3,5" of choices,
    or a range "MIN:MAX" or one number), with its help."""
    return dataclasses.field(
        default=default, metadata={"flag": flag, "metavar": metavar, "help": help}
    )


def _commas(values):
    return ",".join(str(value) for value in values)


def _span(bounds):
    return ":".join(f"{bound:g}" for bound in bounds)


@dataclasses.dataclass(frozen=True)
class SearchSpace:
    """The hyperparameters of a search and the values each may take.

    Choice fields take one value (fixed) or a sequence of values; range fields take one
    number (fixed) or `(min, max)`, sampled on a log scale when `min > 0` and linearly
    otherwise. None means the default, chosen from the data by `resolve`.

    Args:
        kernel_size: odd spatial extents k. Defaults to the paper's 3, 5, 7, 9, 11.
        num_heads: heads N; each must divide every `base_width`. Defaults to 1, 2, 4, 8.
        stem: stems of `keras_sasa.models.resnet.STEMS`. Defaults to `"attention_small"`
            and `"conv_small"` for images of at most 64 pixels, else `"attention"` and
            `"conv"`.
        attention_stages: sets of groups (1..4) that use attention; `()` is the
            convolutional baseline. Defaults to the paper's Table 3: (1, 2, 3, 4),
            (2, 3, 4), (3, 4), (4,).
        stage_strides: the groups' strides (`TrainConfig.stage_strides`), one tuple of
            four per choice. Defaults to the training default for the images: (1, 2, 2, 2),
            or (1, 1, 2, 2) for images of at most 64 pixels.
        use_relative_position: whether the attention layers learn relative position
            embeddings (positional encoding on or off). Defaults to both.
        base_width: widths of the stem and group 1. Defaults to 16, 32, 64.
        learning_rate: peak learning rate range. Defaults to a factor of 4 either side
            of 0.1 per 256 images of the batch.
        weight_decay: decoupled weight decay range. Defaults to (0, 1e-3).
        label_smoothing: label smoothing range, in [0, 1). Defaults to (0, 0.2).

    Raises:
        ValueError: an empty choice, an unknown value (an even kernel size, a stem that
            does not exist, a group outside 1..4), an inverted or out-of-bounds range.
        TypeError: a value of the wrong type (a string for a kernel size, ...).
    """

    kernel_size: Tuple[int, ...] = _field(
        PAPER_KERNEL_SIZES, "--kernel-sizes", "K,...", f"default: {_commas(PAPER_KERNEL_SIZES)}"
    )
    num_heads: Tuple[int, ...] = _field(
        PAPER_NUM_HEADS, "--num-heads", "N,...", f"default: {_commas(PAPER_NUM_HEADS)}"
    )
    stem: Optional[Tuple[str, ...]] = _field(
        None,
        "--stems",
        "STEM,...",
        f"default: {_commas(SMALL_STEMS)} (<= 64 pixels), else {_commas(LARGE_STEMS)}",
    )
    attention_stages: Tuple[Tuple[int, ...], ...] = _field(
        PAPER_ATTENTION_STAGES,
        "--attention-stages",
        "GROUPS;...",
        "sets of groups using attention, separated by ';' (e.g. '1,2,3,4;2,3,4;none'; "
        f"default: {';'.join(_commas(stages) or 'none' for stages in PAPER_ATTENTION_STAGES)})",
    )
    stage_strides: Optional[Tuple[Tuple[int, ...], ...]] = _field(
        None,
        "--stage-strides",
        "STRIDES;...",
        "the groups' strides, sets separated by ';' (e.g. '1,2,2,2;1,1,2,2'; default: the "
        f"training default: {_commas(LARGE_IMAGE_DEFAULTS['stage_strides'])}, or "
        f"{_commas(SMALL_IMAGE_DEFAULTS['stage_strides'])} for images <= 64 pixels)",
    )
    use_relative_position: Tuple[bool, ...] = _field(
        (True, False), "--relative-position", "on,off", "positional encoding (default: on,off)"
    )
    base_width: Tuple[int, ...] = _field(
        DEFAULT_BASE_WIDTHS, "--base-widths", "W,...", f"default: {_commas(DEFAULT_BASE_WIDTHS)}"
    )
    learning_rate: Optional[Tuple[float, float]] = _field(
        None,
        "--learning-rate",
        "MIN:MAX",
        f"default: 1/{LEARNING_RATE_FACTOR:g} to {LEARNING_RATE_FACTOR:g} times "
        f"{recipe.BASE_LEARNING_RATE} x batch size / {recipe.BASE_BATCH_SIZE}",
    )
    weight_decay: Tuple[float, float] = _field(
        DEFAULT_WEIGHT_DECAY, "--weight-decay", "MIN:MAX", f"default: {_span(DEFAULT_WEIGHT_DECAY)}"
    )
    label_smoothing: Tuple[float, float] = _field(
        DEFAULT_LABEL_SMOOTHING,
        "--label-smoothing",
        "MIN:MAX",
        f"default: {_span(DEFAULT_LABEL_SMOOTHING)}",
    )

    def __post_init__(self):
        def set_field(name, value):
            object.__setattr__(self, name, value)

        set_field(
            "kernel_size",
            validation.choices("kernel_size", self.kernel_size, validation.odd_kernel_size),
        )
        set_field(
            "num_heads", validation.choices("num_heads", self.num_heads, validation.positive_int)
        )
        if self.stem is not None:
            set_field("stem", validation.choices("stem", self.stem, _stem))
        stages = _as_sets(self.attention_stages)
        set_field(
            "attention_stages",
            validation.choices("attention_stages", stages, validation.attention_stages),
        )
        if self.stage_strides is not None:
            strides = _as_sets(self.stage_strides)
            set_field(
                "stage_strides",
                validation.choices("stage_strides", strides, validation.stage_strides),
            )
        set_field(
            "use_relative_position",
            validation.choices(
                "use_relative_position", self.use_relative_position, validation.boolean
            ),
        )
        set_field(
            "base_width",
            validation.choices("base_width", self.base_width, validation.positive_int),
        )
        for width in self.base_width:
            for heads in self.num_heads:
                if width % heads:
                    raise ValueError(
                        "Invalid value for argument `num_heads`. Expected head counts that "
                        f"divide every base width; {heads} does not divide {width}. Received: "
                        f"num_heads={self.num_heads}, base_width={self.base_width}"
                    )
        if self.learning_rate is not None:
            set_field(
                "learning_rate",
                validation.value_range("learning_rate", self.learning_rate, low=0.0),
            )
        set_field(
            "weight_decay",
            validation.value_range("weight_decay", self.weight_decay, low=0.0, closed=True),
        )
        set_field(
            "label_smoothing",
            validation.value_range(
                "label_smoothing", self.label_smoothing, low=0.0, closed=True, high=1.0
            ),
        )

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)

    def to_dict(self):
        """The space as JSON-friendly lists (stage sets as lists of groups)."""
        values = {}
        for name in FIELDS:
            value = getattr(self, name)
            if name in SET_FIELDS and value is not None:
                value = [list(groups) for groups in value]
            values[name] = None if value is None else list(value)
        return values

    def resolve(self, config):
        """The space with its data-dependent defaults chosen for a resolved `TrainConfig`.

        Args:
            config: a `TrainConfig` passed through `keras_sasa.training.resolve`
                (`image_size` and `batch_size` set).

        Returns:
            A `SearchSpace` without None fields.

        Raises:
            ValueError: a stem whose downsampling the images are too small for, or an
                attention stem with a width that its 4 heads do not divide.
        """
        # Imported here: the command line builds `tune`'s flags from this module
        # before Keras is imported.
        from keras_sasa.models import min_input_size
        from keras_sasa.models import stem_heads

        small = is_small(config.image_size)
        stems = self.stem or (SMALL_STEMS if small else LARGE_STEMS)
        defaults = SMALL_IMAGE_DEFAULTS if small else LARGE_IMAGE_DEFAULTS
        all_strides = self.stage_strides or (
            tuple(config.stage_strides or defaults["stage_strides"]),
        )
        for stem in stems:
            for strides in all_strides:
                min_size = min_input_size(stem, strides)
                if config.image_size < min_size:
                    raise validation.error(
                        "stem",
                        stems,
                        f"Expected stems that {config.image_size}-pixel images allow: the "
                        f"{stem!r} stem and the four groups downsample by {min_size} (group "
                        f"strides {encode_stages(strides)})",
                    )
            heads = stem_heads(stem)
            if heads is not None:
                for width in self.base_width:
                    if width % heads:
                        raise validation.error(
                            "base_width",
                            self.base_width,
                            f"Expected widths that the {stem!r} stem's {heads} heads divide",
                        )
        learning_rate = self.learning_rate
        if learning_rate is None:
            default = recipe.scaled_learning_rate(config.batch_size)
            learning_rate = (default / LEARNING_RATE_FACTOR, default * LEARNING_RATE_FACTOR)
        return self.replace(stem=stems, stage_strides=all_strides, learning_rate=learning_rate)

    def declare(self, hp):
        """Declares the space's hyperparameters in a `keras_tuner.HyperParameters`.

        Fields with one value are `hp.Fixed`; choices `hp.Choice` (stage sets as strings
        such as "2,3,4" or "none"); ranges `hp.Float`. The space must be resolved.

        Returns:
            `{name: value}` of the values `hp` holds for this trial.
        """
        if self.stem is None or self.stage_strides is None or self.learning_rate is None:
            raise ValueError("Resolve the space (`SearchSpace.resolve`) before declaring it.")
        values = {}
        for name in CHOICE_FIELDS:
            choices = getattr(self, name)
            if name in SET_FIELDS:
                choices = tuple(encode_stages(groups) for groups in choices)
            if len(choices) == 1:
                values[name] = hp.Fixed(name, choices[0])
            elif name == "use_relative_position":
                # A Choice would store booleans as 0 and 1.
                values[name] = hp.Boolean(name, default=choices[0])
            else:
                values[name] = hp.Choice(name, list(choices))
        for name in RANGE_FIELDS:
            low, high = getattr(self, name)
            if low == high:
                values[name] = hp.Fixed(name, low)
            else:
                sampling = "log" if low > 0 else "linear"
                values[name] = hp.Float(name, low, high, sampling=sampling)
        return values

    def contains(self, values):
        """Whether trial `values` (as `declare` gives them) lie in this resolved space."""
        for name in CHOICE_FIELDS:
            value = values[name]
            if name in SET_FIELDS:
                value = decode_stages(value)
            if value not in getattr(self, name):
                return False
        for name in RANGE_FIELDS:
            low, high = getattr(self, name)
            if not low * (1 - 1e-9) <= values[name] <= high * (1 + 1e-9):
                return False
        return True


def config_for(config, values):
    """The `TrainConfig` that trains one point of the space.

    Args:
        config: the search's base `TrainConfig`.
        values: hyperparameter values of a trial (`hp.values`, or the
            `best_hyperparameters` of `tuning_results.json`); keys that are not
            `SearchSpace` fields (e.g. Hyperband's "tuner/epochs") are ignored.

    Returns:
        `config` with the trial's values.
    """
    changes = {name: values[name] for name in FIELDS if name in values}
    for name in SET_FIELDS:
        if name in changes:
            changes[name] = decode_stages(changes[name])
    for name in ("kernel_size", "num_heads", "base_width"):
        if name in changes:
            changes[name] = int(changes[name])
    for name in RANGE_FIELDS:
        if name in changes:
            changes[name] = float(changes[name])
    if "use_relative_position" in changes:
        changes["use_relative_position"] = bool(changes["use_relative_position"])
    return config.replace(**changes)


def encode_stages(stages):
    """(2, 3, 4) -> "2,3,4"; () -> "none" (a keras-tuner choice must be a scalar). Also
    encodes the groups' strides: (1, 1, 2, 2) -> "1,1,2,2"."""
    return ",".join(str(group) for group in stages) or "none"


def decode_stages(text):
    """ "2,3,4" -> (2, 3, 4); "none" -> (). Also decodes strides, "1,1,2,2"."""
    if isinstance(text, (tuple, list)):
        return tuple(text)
    return validation.parse_stages(text)


def _as_sets(value):
    """A flat sequence of integers, (2, 3, 4) or (1, 1, 2, 2), is one set: ((2, 3, 4),);
    sets written as text, "2,3,4" or "none", are read as `encode_stages` writes them
    (text that is not a set is left for the checks to name)."""
    items = (value,) if isinstance(value, str) else value
    if not isinstance(items, (tuple, list)) or not items:
        return value
    if all(isinstance(item, numbers.Integral) for item in items):
        return (items,)
    if not any(isinstance(item, str) for item in items):
        return value
    try:
        return tuple(decode_stages(item) if isinstance(item, str) else item for item in items)
    except ValueError:
        return value


def _stem(name, item):
    return validation.one_of(name, item, STEMS)
