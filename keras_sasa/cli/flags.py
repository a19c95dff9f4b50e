"""Reading the command line's flags: argparse types, and the flags of `TrainConfig` and
`SearchSpace` fields, built from the fields' metadata (help, choices, bounds).

Nothing here imports Keras: flags are read, and mistakes reported, before it starts.
"""

import argparse
import dataclasses
import re
import sys
import typing

from keras_sasa import _validation as validation


class UsageError(Exception):
    """A mistake in the command line, reported as one line without a traceback."""


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line on stderr (no usage block)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")

    def parse_known_args(self, args=None, namespace=None):
        args = sys.argv[1:] if args is None else list(args)
        return super().parse_known_args(_values_after_their_flags(args), namespace)


# A value that argparse takes for a flag: "-1,1,1,1", "-1e-3", "-inf" (it reads only
# "-1" and "-0.5" as negative numbers).
_NEGATIVE_VALUE = re.compile(r"-(\d|\.\d|inf|nan)", re.IGNORECASE)


def _values_after_their_flags(args):
    """["--stage-strides", "-1,1,1,1"] -> ["--stage-strides=-1,1,1,1"]: a value that
    starts like a negative number, after a long flag, is that flag's, so that its type
    reads it and says what is wrong with it (argparse would say "expected one argument")."""
    joined = []
    for arg in args:
        previous = joined[-1] if joined else ""
        if (
            _NEGATIVE_VALUE.match(arg)
            and previous.startswith("--")
            and "=" not in previous
            and previous != "--"
        ):
            joined[-1] = f"{previous}={arg}"
        else:
            joined.append(arg)
    return joined


def positive_int(text):
    return bounded(int, low=1)(text)


def bounded(read, low=None, high=None, low_open=False, high_open=True, why=None):
    """An argparse type: the text read by `read` (int or float), held to the bounds
    `validation.number` holds a field to (finite, [low, high) ...), naming the bound a
    value breaks: "expected a positive integer, got 0", "expected a finite number > 0,
    got inf", "expected a number <= 1000 (why), got 5000"."""
    noun = "an integer" if read is int else "a number"

    def parse(text):
        try:
            value = read(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {noun}, got {text!r}") from None
        problem = validation.out_of_bounds(value, low, high, low_open, high_open, why)
        if problem:
            if read is int and low == 1 and value < 1:
                problem = "a positive integer"
            else:  # "a value > 0" -> "a number > 0", "an integer in [1, 1000]"
                problem = problem.replace("a finite value", "a finite number")
                problem = problem.replace("a value", noun)
            raise argparse.ArgumentTypeError(f"expected {problem}, got {text}")
        return value

    return parse


def int_list(text):
    try:
        return tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected integers separated by commas, got {text!r}"
        ) from None


def positive_int_list(text):
    """ "1,8" -> (1, 8): integers separated by commas, each at least 1."""
    values = int_list(text)
    if min(values) < 1:
        raise argparse.ArgumentTypeError(
            f"expected positive integers separated by commas, got {text!r}"
        )
    return values


def stage_strides(text):
    """ "1,2,2,2" -> (1, 2, 2, 2): the groups' strides, checked as `TrainConfig` does."""
    strides = int_list(text)
    try:
        return validation.stage_strides("stage_strides", strides)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def attention_stages(text):
    try:
        return validation.parse_stages(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected group numbers separated by commas (e.g. 2,3,4) or 'none', got {text!r}"
        ) from None


def seed_list(text):
    try:
        seeds = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected integers like 0,1,2, got {text!r}") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise argparse.ArgumentTypeError(f"expected distinct integers like 0,1,2, got {text!r}")
    return tuple(seeds)


def add_config_flags(groups, config_class, names=None, help=None):
    """Adds a flag per field of `config_class` (`TrainConfig`) that has a `group` in its
    metadata, to `groups[group]`, or to `groups` itself for the fields `names` (in that
    order). `help`: other help texts by field name. The flags' values are stored only
    when given (the field's default applies otherwise): see `config_values`."""
    fields = {field.name: field for field in dataclasses.fields(config_class)}
    chosen = [fields[name] for name in names] if names else list(fields.values())
    for field in chosen:
        metadata = field.metadata
        if not metadata.get("group"):
            continue
        group = groups if names else groups[metadata["group"]]
        options = {"help": (help or {}).get(field.name, metadata["help"]), **metadata["flag"]}
        group.add_argument(
            "--" + field.name.replace("_", "-"),
            dest=field.name,
            default=argparse.SUPPRESS,
            **options,
            **_value_options(field),
        )


def config_type(config_class, name):
    """The argparse type of the flag of field `name` of `config_class`, for a command
    whose flag of the same name is not built by `add_config_flags` (`tune --epochs`)."""
    field = {field.name: field for field in dataclasses.fields(config_class)}[name]
    return _value_options(field)["type"]


def check_space_bounds(values, config_class):
    """Holds the whole numbers of `space_values` (kernel sizes, heads, widths) to the
    bounds of the `config_class` fields of the same names, as `train` holds its flags:
    ValueError naming the field, the bound and the value."""
    fields = {field.name: field for field in dataclasses.fields(config_class)}
    for name, items in values.items():
        bounds = fields[name].metadata.get("bounds") if name in fields else None
        if bounds is None:
            continue
        for item in items if isinstance(items, tuple) else (items,):
            if validation.is_int(item):
                validation.number(name, item, **bounds)


def config_values(args, config_class, names=None):
    """The fields of `config_class` (those in `names`, if given) given on the command
    line, as keyword arguments."""
    names = names or [field.name for field in dataclasses.fields(config_class)]
    return {name: getattr(args, name) for name in names if hasattr(args, name)}


def _value_options(field):
    """How argparse reads a field's value, from its type, default, bounds and word for None."""
    kind, bounds = field.type, field.metadata["bounds"]
    if kind is bool or kind == typing.Union[bool, str]:
        if field.default is False:
            return {"action": "store_true"}
        return {"action": argparse.BooleanOptionalAction}
    if field.name == "stage_strides":
        return {"type": stage_strides}
    if typing.get_origin(_without_none(kind)) is tuple:  # attention_stages
        return {"type": attention_stages}
    if bounds is not None:
        return {"type": bounded(int if int in (kind, *typing.get_args(kind)) else float, **bounds)}
    if field.metadata["none_word"]:
        return {"type": _or_none(_without_none(kind), field.metadata["none_word"])}
    return {"type": int} if kind is int else {}


def _or_none(read, word):
    """Reads `word` as None, and other text with `read` (a str or a float)."""

    def parse(text):
        if text.strip().lower() == word:
            return None
        try:
            return read(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected a number or {word!r}, got {text!r}"
            ) from None

    return parse


def add_space_flags(group, space_class):
    """Adds a flag per field of `space_class` (`SearchSpace`) as its metadata describes
    it; the text is read by `space_values`."""
    for field in dataclasses.fields(space_class):
        metadata = field.metadata
        group.add_argument(
            metadata["flag"],
            dest="space." + field.name,
            metavar=metadata["metavar"],
            help=metadata["help"],
        )


def space_values(args, space_class):
    """The `SearchSpace` arguments given on the command line, read from their text as
    the field's type says: ranges `Tuple[float, float]` "MIN:MAX" or one number; choices
    "3,5", "on,off" (booleans), stage sets "2,3,4;none" (tuples). UsageError naming the
    flag for text that cannot be read."""
    values = {}
    for field in dataclasses.fields(space_class):
        text = getattr(args, "space." + field.name)
        if text is None:
            continue
        flag = field.metadata["flag"]
        item_types = typing.get_args(_without_none(field.type))
        if item_types == (float, float):
            values[field.name] = _range(flag, text)
        elif typing.get_origin(item_types[0]) is tuple:
            sets = [part.strip() for part in text.split(";") if part.strip()]
            read = int_list if field.name == "stage_strides" else attention_stages
            values[field.name] = tuple(_read_or_error(read, flag, part) for part in sets)
        else:
            read = {int: int, str: str, bool: _on_off}[item_types[0]]
            values[field.name] = _split_list(flag, text, read)
    return values


def _without_none(kind):
    args = [arg for arg in typing.get_args(kind) if arg is not type(None)]
    return args[0] if typing.get_origin(kind) is typing.Union else kind


def _split_list(flag, text, convert):
    """ "3,5" -> (3, 5) with `convert` on each item; UsageError naming `flag` otherwise."""
    try:
        return tuple(convert(part.strip()) for part in text.split(",") if part.strip())
    except ValueError:
        raise UsageError(f"Invalid value for {flag}: cannot read {text!r}.") from None


def _on_off(text):
    values = {"on": True, "true": True, "off": False, "false": False}
    if text.lower() not in values:
        raise ValueError(text)
    return values[text.lower()]


def _range(flag, text):
    """ "1e-3:1e-1" -> (0.001, 0.1); "0.05" -> 0.05 (fixed)."""
    try:
        parts = [float(part) for part in text.split(":")]
    except ValueError:
        parts = ()
    if not 1 <= len(parts) <= 2:
        raise UsageError(f"Invalid value for {flag}: expected MIN:MAX or a number, got {text!r}.")
    return parts[0] if len(parts) == 1 else tuple(parts)


def _read_or_error(read, flag, text):
    """`read(text)` (an argparse type); UsageError naming `flag` if it cannot read it."""
    try:
        return read(text)
    except argparse.ArgumentTypeError as error:
        raise UsageError(f"Invalid value for {flag}: {error}.") from None


# --validation-split of `tune`: a share, or "none".
number_or_none = _or_none(float, "none")
