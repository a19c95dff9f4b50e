"""Argument checks shared by the whole package, with Keras's message style.

Every error names the argument and echoes what it got, as Keras's
`utils/argument_validation.py` does: "Invalid value for argument `filters`. Expected a
strictly positive value. Received: filters=0". The module imports nothing heavy: the
command line uses it before Keras starts.
"""

import math
import numbers


def error(name, value, expected, kind=ValueError):
    """The exception (not raised) for argument `name` holding `value`; `expected` is a
    sentence such as "Expected an odd value"."""
    what = "type" if kind is TypeError else "value"
    received = f"{name}={value!r}"
    if kind is TypeError:
        received += f" of type {type(value).__name__}"
    exception = kind(f"Invalid {what} for argument `{name}`. {expected}. Received: {received}")
    exception.expected = expected  # For `choices`, which echoes a whole sequence instead.
    return exception


def is_int(value):
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def integer(name, value, type_error=TypeError):
    if not is_int(value):
        raise error(name, value, "Expected an integer", type_error)
    return int(value)


def positive_int(name, value, type_error=TypeError):
    """`value` as an int >= 1. `type_error`: raised for a non-integer (ValueError where a
    caller has always refused every bad value with ValueError)."""
    integer(name, value, type_error)
    if value < 1:
        raise error(name, value, "Expected a strictly positive value")
    return int(value)


def odd_kernel_size(name, value, type_error=TypeError):
    positive_int(name, value, type_error)
    if value % 2 == 0:
        raise error(
            name, value, "Expected an odd value, so that the window is centred on its pixel"
        )
    return value


def square(name, value, check_item=positive_int):
    """An int, or a pair of equal ints as `Conv2D` takes for `kernel_size`, `strides` and
    `dilation_rate`, returned as one int checked by `check_item(name, value)`. A pair of
    different values is refused: windows and strides here are square."""
    if isinstance(value, (tuple, list)):
        if len(value) != 2 or not all(is_int(item) for item in value):
            raise error(name, value, "Expected an integer or a pair of integers", TypeError)
        if value[0] != value[1]:
            raise error(
                name,
                value,
                "Expected an integer or a pair of equal integers: windows and strides are "
                "square here",
            )
        value = value[0]
    return check_item(name, value)


def one_of(name, value, choices):
    if value not in choices:
        raise error(name, value, f"Expected one of {tuple(choices)}")
    return value


def boolean(name, value):
    if not isinstance(value, bool):
        raise error(name, value, "Expected a bool", TypeError)
    return value


def number(name, value, low=None, high=None, low_open=False, high_open=True, why=None):
    """A finite real number within `low` and `high` (None: unbounded). The bounds are
    closed, except a `low_open` lower bound and (by default) the upper one. `why`: the
    reason for the bounds, said when a value is refused."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise error(name, value, "Expected a number", TypeError)
    problem = out_of_bounds(value, low, high, low_open, high_open, why)
    if problem:
        raise error(name, value, f"Expected {problem}")
    return value


def out_of_bounds(value, low=None, high=None, low_open=False, high_open=True, why=None):
    """What `value` (a real number) should be ("a value > 0", "a finite value in [0, 1)",
    "a value in [1, 1000] (why)"), or None if it is finite and within the bounds."""
    bounds = interval(low, high, low_open, high_open)
    if not math.isfinite(value):
        return f"a finite value {bounds}".strip()
    if low is not None and (value < low or (low_open and value == low)):
        return f"a value {bounds}"
    if high is not None and (value > high or (high_open and value == high)):
        return f"a value {bounds}" + (f" ({why})" if why else "")
    return None


def interval(low, high, low_open=False, high_open=True):
    """ "> 0", ">= 0", "in [0, 1)", ... as the messages say it; "" without bounds."""
    if low is None and high is None:
        return ""
    if high is None:
        return f"{'>' if low_open else '>='} {_bound(low)}"
    if low is None:
        return f"{'<' if high_open else '<='} {_bound(high)}"
    return f"in {'(' if low_open else '['}{_bound(low)}, {_bound(high)}{')' if high_open else ']'}"


def _bound(value):
    """1000 and 4294967295 as they are, 0.001 as :g writes it."""
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def choices(name, value, check_item):
    """The distinct items of `value` (one value or a sequence), each passed through
    `check_item(name, item)`, one of this module's checks (`positive_int`, `boolean`,
    ...); the error says what that check expected, names `name` and echoes the whole
    `value`."""
    if value is None or isinstance(value, (str, bool, numbers.Number)):
        values = (value,)
    else:
        try:
            values = tuple(value)
        except TypeError:
            raise error(
                name, value, "Expected a value or a sequence of values", TypeError
            ) from None
    if not values:
        raise error(name, value, "Expected at least one value")
    checked = []
    for item in values:
        try:
            item = check_item(name, item)
        except (TypeError, ValueError) as problem:
            expected = getattr(problem, "expected", str(problem))
            raise error(name, value, expected, type(problem)) from None
        if item not in checked:
            checked.append(item)
    return tuple(checked)


def value_range(name, value, low, closed=False, high=None):
    """`(min, max)` from a number or a pair, within [low (`closed`) or (low, and below
    `high`."""
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        bounds = (value, value)
    else:
        try:
            bounds = tuple(value)
        except TypeError:
            raise error(name, value, "Expected a number or (min, max)", TypeError) from None
    if len(bounds) != 2:
        raise error(name, value, "Expected (min, max)" + ("" if bounds else "; the range is empty"))
    for bound in bounds:
        if isinstance(bound, bool) or not isinstance(bound, numbers.Real):
            raise error(name, value, "Expected numbers", TypeError)
        if not math.isfinite(bound):
            raise error(name, value, "Expected finite numbers")
    minimum, maximum = (float(bound) for bound in bounds)
    if minimum > maximum:
        raise error(name, value, "Expected min <= max; the range is inverted (min > max)")
    if minimum < low or (minimum == low and not closed):
        raise error(name, value, f"Expected values {interval(low, None, low_open=not closed)}")
    if high is not None and maximum >= high:
        raise error(name, value, f"Expected values {interval(None, high)}")
    return (minimum, maximum)


def heads_divide_filters(num_heads, filters):
    if filters % num_heads:
        raise ValueError(
            "Invalid value for argument `num_heads`. It must divide `filters`. "
            f"Received: num_heads={num_heads}, filters={filters}"
        )


def attention_stages(name, value, num_groups=4):
    """The groups (1..`num_groups`) that use attention, sorted, each once.

    Raises:
        TypeError: `value` is not a sequence.
        ValueError: an item is not a group number in 1..`num_groups`.
    """
    try:
        stages = tuple(value)
    except TypeError:
        raise error(name, value, "Expected a sequence of group numbers", TypeError) from None
    for group in stages:
        if not is_int(group) or not 1 <= group <= num_groups:
            raise error(name, value, f"Expected group numbers in 1..{num_groups}")
    return tuple(sorted({int(group) for group in stages}))


def stage_strides(name, value, num_groups=4):
    """The downsampling of each of the `num_groups` groups' first block: positive ints.

    Raises:
        TypeError: `value` is not a sequence.
        ValueError: not `num_groups` positive integers.
    """
    try:
        strides = tuple(value)
    except TypeError:
        raise error(name, value, "Expected a sequence of strides", TypeError) from None
    if len(strides) != num_groups or not all(is_int(s) and s >= 1 for s in strides):
        raise error(name, value, f"Expected {num_groups} positive integers, one per group")
    return tuple(int(s) for s in strides)


def parse_stages(text):
    """ "2,3,4" -> (2, 3, 4); "none" or "" -> () (no attention). ValueError otherwise."""
    text = text.strip().lower()
    if text in ("", "none"):
        return ()
    return tuple(int(part) for part in text.split(","))


def image_channels(layer, input_shape):
    """The channel count of a (batch, height, width, channels) input; errors show the shape.
    Known sizes of 0 (no rows, columns or channels) are refused."""
    input_shape = tuple(input_shape)
    name = type(layer).__name__
    if len(input_shape) != 4:
        raise ValueError(
            f"{name} expects inputs of rank 4 (batch, height, width, channels). "
            f"Received: input_shape={input_shape}"
        )
    if input_shape[-1] is None:
        raise ValueError(
            f"{name} needs a known channel count (last axis). Received: input_shape={input_shape}"
        )
    if any(size is not None and size < 1 for size in input_shape[1:]):
        raise ValueError(
            f"{name} expects inputs with at least one row, one column and one channel. "
            f"Received: input_shape={input_shape}"
        )
    return input_shape[-1]
