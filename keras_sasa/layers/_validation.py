"""Argument checks shared by the layers: each error names the argument and echoes its value."""


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def positive_int(name, value):
    if not _is_int(value):
        raise TypeError(
            f"Invalid type for argument `{name}`. Expected an integer. "
            f"Received {name}={value!r} of type {type(value).__name__}"
        )
    if value < 1:
        raise ValueError(
            f"Invalid value for argument `{name}`. Expected a strictly positive value. "
            f"Received {name}={value}"
        )
    return value


def odd_kernel_size(name, value):
    positive_int(name, value)
    if value % 2 == 0:
        raise ValueError(
            f"Invalid value for argument `{name}`. Expected an odd value, so that the "
            f"window is centred on its pixel. Received {name}={value}"
        )
    return value


def one_of(name, value, choices):
    if value not in choices:
        raise ValueError(
            f"Invalid value for argument `{name}`. Expected one of {choices}. "
            f"Received {name}={value!r}"
        )
    return value


def boolean(name, value):
    if not isinstance(value, bool):
        raise TypeError(
            f"Invalid type for argument `{name}`. Expected a bool. "
            f"Received {name}={value!r} of type {type(value).__name__}"
        )
    return value


def heads_divide_filters(num_heads, filters):
    if filters % num_heads:
        raise ValueError(
            "Invalid value for argument `num_heads`. It must divide `filters`. "
            f"Received num_heads={num_heads}, filters={filters}"
        )


def image_channels(layer, input_shape):
    """The channel count of a (batch, height, width, channels) input; errors show the shape."""
    input_shape = tuple(input_shape)
    name = type(layer).__name__
    if len(input_shape) != 4:
        raise ValueError(
            f"{name} expects inputs of rank 4 (batch, height, width, channels). "
            f"Received input_shape={input_shape}"
        )
    if input_shape[-1] is None:
        raise ValueError(
            f"{name} needs a known channel count (last axis). Received input_shape={input_shape}"
        )
    return input_shape[-1]
