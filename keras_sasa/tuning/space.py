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
import math
import numbers
from typing import Optional, Tuple

from keras_sasa.models import STEMS
from keras_sasa.models import min_input_size
from keras_sasa.models import stem_heads
from keras_sasa.models import stem_reduction
from keras_sasa.training import recipe
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
# The default stems: those without downsampling for small images, the others otherwise.
SMALL_STEMS = tuple(stem for stem in STEMS if stem_reduction(stem) == 1)
LARGE_STEMS = tuple(stem for stem in STEMS if stem_reduction(stem) > 1)

CHOICE_FIELDS = (
    "kernel_size",
    "num_heads",
    "stem",
    "attention_stages",
    "use_relative_position",
    "base_width",
)
RANGE_FIELDS = ("learning_rate", "weight_decay", "label_smoothing")
FIELDS = CHOICE_FIELDS + RANGE_FIELDS


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

    kernel_size: Tuple[int, ...] = PAPER_KERNEL_SIZES
    num_heads: Tuple[int, ...] = PAPER_NUM_HEADS
    stem: Optional[Tuple[str, ...]] = None
    attention_stages: Tuple[Tuple[int, ...], ...] = PAPER_ATTENTION_STAGES
    use_relative_position: Tuple[bool, ...] = (True, False)
    base_width: Tuple[int, ...] = DEFAULT_BASE_WIDTHS
    learning_rate: Optional[Tuple[float, float]] = None
    weight_decay: Tuple[float, float] = DEFAULT_WEIGHT_DECAY
    label_smoothing: Tuple[float, float] = DEFAULT_LABEL_SMOOTHING

    def __post_init__(self):
        def set_field(name, value):
            object.__setattr__(self, name, value)

        set_field("kernel_size", _choices("kernel_size", self.kernel_size, _odd_positive_int))
        set_field("num_heads", _choices("num_heads", self.num_heads, _positive_int))
        if self.stem is not None:
            set_field("stem", _choices("stem", self.stem, _stem))
        set_field("attention_stages", _stage_choices(self.attention_stages))
        set_field(
            "use_relative_position",
            _choices("use_relative_position", self.use_relative_position, _boolean),
        )
        set_field("base_width", _choices("base_width", self.base_width, _positive_int))
        for width in self.base_width:
            for heads in self.num_heads:
                if width % heads:
                    raise ValueError(
                        "Invalid value for `num_heads`: every head count must divide every "
                        f"base width, but {heads} does not divide {width}. Received "
                        f"num_heads={self.num_heads}, base_width={self.base_width}."
                    )
        if self.learning_rate is not None:
            set_field("learning_rate", _range("learning_rate", self.learning_rate, low=0.0))
        set_field("weight_decay", _range("weight_decay", self.weight_decay, low=0.0, closed=True))
        set_field(
            "label_smoothing",
            _range("label_smoothing", self.label_smoothing, low=0.0, closed=True, high=1.0),
        )

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)

    def to_dict(self):
        """The space as JSON-friendly lists (stage sets as lists of groups)."""
        values = {}
        for name in FIELDS:
            value = getattr(self, name)
            if name == "attention_stages":
                value = [list(stages) for stages in value]
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
        small = is_small(config.image_size)
        stems = self.stem or (SMALL_STEMS if small else LARGE_STEMS)
        for stem in stems:
            min_size = min_input_size(stem)
            if config.image_size < min_size:
                raise ValueError(
                    f"Invalid value for `stem`: the {stem!r} stem and the four groups "
                    f"downsample by {min_size}, more than the {config.image_size}-pixel "
                    f"images allow. Received stem={stems}."
                )
            heads = stem_heads(stem)
            if heads is not None:
                for width in self.base_width:
                    if width % heads:
                        raise ValueError(
                            f"Invalid value for `base_width`: the {stem!r} stem has "
                            f"{heads} heads, which must divide the width. Received "
                            f"base_width={self.base_width}."
                        )
        learning_rate = self.learning_rate
        if learning_rate is None:
            default = recipe.scaled_learning_rate(config.batch_size)
            learning_rate = (default / LEARNING_RATE_FACTOR, default * LEARNING_RATE_FACTOR)
        return self.replace(stem=stems, learning_rate=learning_rate)

    def declare(self, hp):
        """Declares the space's hyperparameters in a `keras_tuner.HyperParameters`.

        Fields with one value are `hp.Fixed`; choices `hp.Choice` (stage sets as strings
        such as "2,3,4" or "none"); ranges `hp.Float`. The space must be resolved.

        Returns:
            `{name: value}` of the values `hp` holds for this trial.
        """
        if self.stem is None or self.learning_rate is None:
            raise ValueError("Resolve the space (`SearchSpace.resolve`) before declaring it.")
        values = {}
        for name in CHOICE_FIELDS:
            choices = getattr(self, name)
            if name == "attention_stages":
                choices = tuple(encode_stages(stages) for stages in choices)
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
            if name == "attention_stages":
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
    if "attention_stages" in changes:
        changes["attention_stages"] = decode_stages(changes["attention_stages"])
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
    """(2, 3, 4) -> "2,3,4"; () -> "none" (a keras-tuner choice must be a scalar)."""
    return ",".join(str(group) for group in stages) or "none"


def decode_stages(text):
    """ "2,3,4" -> (2, 3, 4); "none" -> ()."""
    if isinstance(text, (tuple, list)):
        return tuple(text)
    text = text.strip().lower()
    if text in ("", "none"):
        return ()
    return tuple(int(part) for part in text.split(","))


def _choices(name, value, check):
    if value is None or isinstance(value, (str, bool, numbers.Number)):
        values = (value,)
    else:
        try:
            values = tuple(value)
        except TypeError:
            raise TypeError(
                f"Invalid type for `{name}`: expected a value or a sequence of values, got "
                f"{value!r} of type {type(value).__name__}."
            ) from None
    if not values:
        raise ValueError(f"Invalid value for `{name}`: expected at least one value, got {value!r}.")
    checked = []
    for item in values:
        item = check(name, item, value)
        if item not in checked:
            checked.append(item)
    return tuple(checked)


def _positive_int(name, item, value):
    if isinstance(item, bool) or not isinstance(item, numbers.Integral):
        raise TypeError(
            f"Invalid type for `{name}`: expected integers, got {item!r} of type "
            f"{type(item).__name__} in {name}={value!r}."
        )
    if item < 1:
        raise ValueError(
            f"Invalid value for `{name}`: expected positive integers, got {name}={value!r}."
        )
    return int(item)


def _odd_positive_int(name, item, value):
    item = _positive_int(name, item, value)
    if item % 2 == 0:
        raise ValueError(
            f"Invalid value for `{name}`: expected odd sizes (the window is centred on its "
            f"pixel; the paper tries {', '.join(map(str, PAPER_KERNEL_SIZES))}), got "
            f"{name}={value!r}."
        )
    return item


def _stem(name, item, value):
    if item not in STEMS:
        raise ValueError(
            f"Invalid value for `{name}`: expected stems among {', '.join(STEMS)}, got "
            f"{name}={value!r}."
        )
    return item


def _boolean(name, item, value):
    if not isinstance(item, bool):
        raise TypeError(
            f"Invalid type for `{name}`: expected True and/or False, got {item!r} of type "
            f"{type(item).__name__} in {name}={value!r}."
        )
    return item


def _stage_choices(value):
    name = "attention_stages"
    if isinstance(value, str):
        value = (value,)
    try:
        items = tuple(value)
    except TypeError:
        raise TypeError(
            f"Invalid type for `{name}`: expected a sequence of sets of groups, e.g. "
            f"((1, 2, 3, 4), (2, 3, 4)), got {value!r}."
        ) from None
    # A flat sequence of groups, (2, 3, 4), is one set.
    if items and all(isinstance(item, numbers.Integral) for item in items):
        items = (items,)
    if not items:
        raise ValueError(f"Invalid value for `{name}`: expected at least one set, got {value!r}.")
    checked = []
    for item in items:
        try:
            stages = decode_stages(item) if isinstance(item, str) else tuple(item)
        except (TypeError, ValueError):
            raise ValueError(
                f"Invalid value for `{name}`: expected sets of groups 1..4, got {name}={value!r}."
            ) from None
        for group in stages:
            if isinstance(group, bool) or not isinstance(group, numbers.Integral):
                raise TypeError(
                    f"Invalid type for `{name}`: expected group numbers (integers), got "
                    f"{group!r} in {name}={value!r}."
                )
            if not 1 <= group <= 4:
                raise ValueError(
                    f"Invalid value for `{name}`: expected groups in 1..4, got {name}={value!r}."
                )
        stages = tuple(sorted({int(group) for group in stages}))
        if stages not in checked:
            checked.append(stages)
    return tuple(checked)


def _range(name, value, low, closed=False, high=None):
    """(min, max) from a number or a pair, checked against the bounds [low or (low, and high)."""
    if isinstance(value, bool):
        raise TypeError(
            f"Invalid type for `{name}`: expected a number or (min, max), got {value!r}."
        )
    if isinstance(value, numbers.Real):
        bounds = (value, value)
    else:
        try:
            bounds = tuple(value)
        except TypeError:
            raise TypeError(
                f"Invalid type for `{name}`: expected a number or (min, max), got {value!r}."
            ) from None
    if not bounds:
        raise ValueError(f"Invalid value for `{name}`: the range is empty, got {name}={value!r}.")
    if len(bounds) != 2:
        raise ValueError(f"Invalid value for `{name}`: expected (min, max), got {name}={value!r}.")
    for bound in bounds:
        if isinstance(bound, bool) or not isinstance(bound, numbers.Real):
            raise TypeError(
                f"Invalid type for `{name}`: expected numbers, got {bound!r} in {name}={value!r}."
            )
        if not math.isfinite(bound):
            raise ValueError(
                f"Invalid value for `{name}`: expected finite numbers, got {name}={value!r}."
            )
    minimum, maximum = (float(bound) for bound in bounds)
    if minimum > maximum:
        raise ValueError(
            f"Invalid value for `{name}`: the range is inverted (min > max), got {name}={value!r}."
        )
    if minimum < low or (minimum == low and not closed):
        relation = ">=" if closed else ">"
        raise ValueError(
            f"Invalid value for `{name}`: expected values {relation} {low:g}, got {name}={value!r}."
        )
    if high is not None and maximum >= high:
        raise ValueError(
            f"Invalid value for `{name}`: expected values < {high:g}, got {name}={value!r}."
        )
    return (minimum, maximum)
