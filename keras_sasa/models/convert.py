"""`to_attention`: a Keras CNN with its spatial convolutions replaced by local self-attention.

The paper's method is a recipe applied to a network (Ramachandran et al. 2019, §3.1):
every spatial convolution becomes a `LocalSelfAttention2D` of the same width, stride and
dilation, and everything else stays. `to_attention` applies it to any functional or
`Sequential` model, nested models included, and returns a new model; the layers it keeps
keep their weights.

Rules, the same for every model:
- A spatial convolution is a `keras.layers.Conv2D` (subclasses included) with a kernel
  larger than 1 x 1 and `groups=1`. Depthwise, separable and grouped convolutions, 1 x 1
  convolutions and every other layer are kept.
- The attention takes the convolution's name, filters, strides and dilation. Its window
  is `kernel_size`, cut on a map of known size n to 2n - 1 as `SASAResNet` cuts it (the
  wider positions are all outside the map and masked).
- Shapes: a `padding="same"` convolution maps directly. A `"valid"` convolution whose
  input is a `ZeroPadding2D` used by it alone, padding `dilation * (kernel - 1)` rows and
  columns in all (the `keras.applications` idiom: `conv1_pad` + `conv1_conv`,
  ResNet50V2's `*_2_pad` + `*_2_conv`), is replaced together with the padding: both
  give ceil(n / strides) outputs. Any other `"valid"` convolution is refused.
- Bias: the attention has no output bias (the paper's has no biases at all), so the
  convolution's bias is dropped; a following BatchNormalization absorbs a constant
  shift anyway. `use_bias=True` in `attention_kwargs` gives the q/k/v projections biases.
- Activation: a convolution's own `activation` (other than linear) is kept, as an
  `Activation` layer named `<conv>_activation` after the attention.
"""

import keras

from keras_sasa import _validation as check
from keras_sasa.layers.local_attention import LocalSelfAttention2D
from keras_sasa.models.resnet import window_size


def to_attention(
    model,
    *,
    kernel_size=7,
    num_heads=8,
    keep_stem=True,
    layers=None,
    copy_weights=True,
    **attention_kwargs,
):
    """Returns a copy of `model` whose spatial convolutions are local self-attention.

    See the module docstring for the rules (what is replaced, shapes, bias, activation).

    Args:
        model: a built functional or `Sequential` `keras.Model`; models inside it are
            converted too. It is left unchanged.
        kernel_size: spatial extent k of every attention window (an odd int). Defaults
            to 7, the paper's.
        num_heads: heads of every attention layer; must divide each replaced layer's
            filters. Defaults to 8, the paper's.
        keep_stem: keep the first spatial convolution of the model (the one that reads
            the image): the paper's "conv stem + attention". Defaults to True.
        layers: which convolutions to replace instead of "all but the stem": a list of
            layer names (each a spatial `Conv2D` of the model or of a model inside it),
            or a callable that takes a spatial `Conv2D` and returns whether to replace
            it. `keep_stem` does not apply then.
        copy_weights: give every kept layer the weights of its original (the attention
            layers start from their initializers). Defaults to True.
        **attention_kwargs: more `LocalSelfAttention2D` arguments (`border`,
            `implementation`, `use_relative_position`, `use_bias`, ...).

    Returns:
        A new `keras.Model` of the same kind and name; kept layers have the names and
        output shapes they had.

    Raises:
        TypeError: `model` is not a functional or `Sequential` model.
        ValueError: a bad argument; a name in `layers` that is not a spatial `Conv2D`
            of the model; `num_heads` does not divide a replaced layer's filters; a
            replaced layer has unequal strides or dilations, `channels_first` data or
            `"valid"` padding that cannot be made "same" (each naming the layer).

    Example:

    >>> cnn = keras.Sequential([
    ...     keras.Input((16, 16, 3)),
    ...     keras.layers.Conv2D(16, 3, padding="same", activation="relu"),
    ...     keras.layers.Conv2D(32, 3, strides=2, padding="same"),
    ...     keras.layers.GlobalAveragePooling2D(),
    ... ])
    >>> sasa = keras_sasa.models.to_attention(cnn, kernel_size=5, num_heads=4)
    >>> [type(layer).__name__ for layer in sasa.layers]
    ['Conv2D', 'LocalSelfAttention2D', 'GlobalAveragePooling2D']
    """
    if not _is_graph_model(model):
        raise check.error(
            "model", model, "Expected a functional or Sequential keras.Model", TypeError
        )
    if not model.built or not model.inputs:
        raise check.error("model", model, "Expected a built model with known inputs")
    check.odd_kernel_size("kernel_size", kernel_size)
    check.positive_int("num_heads", num_heads)
    check.boolean("keep_stem", keep_stem)
    check.boolean("copy_weights", copy_weights)
    for name in ("filters", "strides", "dilation_rate", "name", "kernel_size", "num_heads"):
        if name in attention_kwargs:
            raise check.error(
                "attention_kwargs",
                attention_kwargs,
                f"Expected no `{name}`: it comes from each convolution or is an argument of "
                "to_attention",
            )
    chosen = _select(model, keep_stem, layers)
    converter = _Converter(chosen, kernel_size, num_heads, attention_kwargs)
    converted = converter.convert(model)
    if copy_weights:
        for old, new in converter.kept:
            new.set_weights(old.get_weights())
    return converted


def _is_graph_model(model):
    # Functional and Sequential models hold a graph of layers that can be rebuilt; a
    # subclassed model's call() is code. `keras.Model(inputs, outputs)` makes an instance
    # of the class Functional, which the public API does not export.
    return isinstance(model, keras.Sequential) or type(model).__name__ == "Functional"


def walk(model):
    """The layers of `model` in order, those of models inside it included (depth first)."""
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from walk(layer)
        else:
            yield layer


def is_spatial_conv(layer):
    """Whether `to_attention` replaces `layer` by default: a `Conv2D` with a kernel larger
    than 1 x 1 and `groups=1` (not depthwise, separable or grouped)."""
    return (
        isinstance(layer, keras.layers.Conv2D)
        and tuple(layer.kernel_size) != (1, 1)
        and getattr(layer, "groups", 1) == 1
    )


def _select(model, keep_stem, layers):
    """The ids of the convolutions to replace."""
    convs = [layer for layer in walk(model) if is_spatial_conv(layer)]
    if layers is None:
        return {id(layer) for layer in convs[1 if keep_stem else 0 :]}
    if callable(layers):
        return {id(layer) for layer in convs if layers(layer)}
    if isinstance(layers, str) or not isinstance(layers, (list, tuple, set, frozenset)):
        raise check.error(
            "layers", layers, "Expected a list of layer names or a callable", TypeError
        )
    by_name = {layer.name: layer for layer in convs}
    unknown = [name for name in layers if name not in by_name]
    if unknown:
        raise check.error(
            "layers",
            layers,
            f"Expected names of spatial Conv2D layers of model {model.name!r}; not one: "
            f"{', '.join(map(repr, unknown))}",
        )
    return {id(by_name[name]) for name in layers}


class _Converter:
    """Rebuilds models layer by layer; remembers which original layer each kept one copies."""

    def __init__(self, chosen, kernel_size, num_heads, attention_kwargs):
        self.chosen = chosen
        self.kernel_size = kernel_size
        self.num_heads = num_heads
        self.attention_kwargs = attention_kwargs
        self.kept = []  # (original, copy) pairs
        self.activations = {}  # id of a new attention layer -> its Activation layer
        # ids of the ZeroPadding2D layers merged into an attention layer, and of the
        # 'valid' convolutions they make 'same'.
        self.dropped_pads = set()
        self.padded_convs = set()

    def convert(self, model):
        paddings, convs = _fused_paddings(model, self.chosen)
        self.dropped_pads |= paddings
        self.padded_convs |= convs
        if isinstance(model, keras.Sequential):
            return self._sequential(model)
        # New inputs with the original names (clone_model would name them anew).
        tensors = keras.tree.flatten(model.input)
        names = keras.tree.flatten(_input_names(model))
        inputs = keras.tree.pack_sequence_as(
            model.input,
            [
                keras.Input(batch_shape=t.shape, dtype=t.dtype, name=name)
                for t, name in zip(tensors, names, strict=True)
            ],
        )
        return keras.models.clone_model(
            model, input_tensors=inputs, clone_function=self._clone, call_function=self._call
        )

    def _sequential(self, model):
        (source,) = model.inputs
        new_layers = [keras.Input(batch_shape=source.shape, dtype=source.dtype)]
        for layer in model.layers:
            if id(layer) in self.dropped_pads:
                continue
            new = self._clone(layer)
            new_layers.append(new)
            if id(new) in self.activations:
                new_layers.append(self.activations[id(new)])
        return keras.Sequential(new_layers, name=model.name, trainable=model.trainable)

    def _clone(self, layer):
        if isinstance(layer, keras.Model):
            return self.convert(layer)
        if id(layer) in self.dropped_pads:
            return layer  # Never called: `_call` passes its input through.
        if id(layer) in self.chosen:
            return self._attention(layer)
        new = layer.__class__.from_config(layer.get_config())
        self.kept.append((layer, new))
        return new

    def _call(self, layer, *args, **kwargs):
        if id(layer) in self.dropped_pads:
            return args[0]
        outputs = layer(*args, **kwargs)
        activation = self.activations.get(id(layer))
        return outputs if activation is None else activation(outputs)

    def _attention(self, conv):
        if conv.padding != "same" and id(conv) not in self.padded_convs:
            raise ValueError(
                f"Cannot replace layer {conv.name!r}: a 'valid' Conv2D gives a smaller "
                "output than LocalSelfAttention2D (which gives 'same'-sized outputs), and it "
                "does not follow a ZeroPadding2D that makes it 'same'. Leave it out with "
                "`layers=` or give it padding='same'."
            )
        if conv.data_format != "channels_last":
            raise ValueError(
                f"Cannot replace layer {conv.name!r}: LocalSelfAttention2D takes "
                f"channels_last inputs. Received: data_format={conv.data_format!r}"
            )
        if conv.filters % self.num_heads:
            raise ValueError(
                f"Cannot replace layer {conv.name!r}: num_heads={self.num_heads} does not "
                f"divide its filters={conv.filters}. Choose num_heads dividing every "
                "replaced layer's filters, or leave this layer out with `layers=`."
            )
        shape = conv.input.shape
        args = {"border": "mask", **self.attention_kwargs}
        kernel_size = window_size(shape, self.kernel_size, args["border"])
        try:
            attention = LocalSelfAttention2D(
                conv.filters,
                kernel_size=kernel_size,
                num_heads=self.num_heads,
                strides=tuple(conv.strides),
                dilation_rate=tuple(conv.dilation_rate),
                name=conv.name,
                dtype=conv.dtype_policy,
                **args,
            )
        except ValueError as error:
            raise ValueError(f"Cannot replace layer {conv.name!r}: {error}") from None
        if keras.activations.serialize(conv.activation) != "linear":
            self.activations[id(attention)] = keras.layers.Activation(
                conv.activation, name=f"{conv.name}_activation"
            )
        return attention


def _input_names(model):
    """The names of a functional model's input layers, in the structure of `model.input`
    (its config lists them as [name, node, tensor] entries)."""
    entries = model.get_config()["input_layers"]
    if isinstance(entries, dict):
        return {key: entry[0] for key, entry in entries.items()}
    if entries and isinstance(entries[0], str):
        return entries[0]
    return [entry[0] for entry in entries]


def _layer_input(layer):
    try:
        return layer.input
    except (AttributeError, ValueError):  # Called more than once, or never.
        return None


def _padded_convs(model):
    """(ZeroPadding2D, the one layer that reads it) pairs of `model`'s own layers."""
    if isinstance(model, keras.Sequential):
        # Layer order is the graph; a loaded Sequential has called its layers more than
        # once (one node per call), so their `input` tensors are not their neighbours'.
        return list(zip(model.layers, model.layers[1:], strict=False))
    readers = {}
    for layer in model.layers:
        for tensor in keras.tree.flatten(_layer_input(layer)):
            readers.setdefault(id(tensor), []).append(layer)
    pairs = []
    for pad in model.layers:
        if isinstance(pad, keras.layers.ZeroPadding2D):
            reading = readers.get(id(pad.output), [])
            if len(reading) == 1:
                pairs.append((pad, reading[0]))
    return pairs


def _fused_paddings(model, chosen):
    """`(paddings, convs)`: the ids of the ZeroPadding2D layers of `model` (not of models
    inside it) that make a chosen 'valid' convolution 'same' and feed nothing else, and
    of those convolutions. Each such pair is replaced by one attention layer."""
    paddings, convs = set(), set()
    for pad, conv in _padded_convs(model):
        if not isinstance(pad, keras.layers.ZeroPadding2D) or pad.data_format != "channels_last":
            continue
        if id(conv) not in chosen or conv.padding != "valid":
            continue
        (top, bottom), (left, right) = pad.padding
        reach = [d * (k - 1) for d, k in zip(conv.dilation_rate, conv.kernel_size, strict=True)]
        if [top + bottom, left + right] == reach:
            paddings.add(id(pad))
            convs.add(id(conv))
    return paddings, convs
