"""The `convert` command: a `.keras` CNN with its spatial convolutions replaced by local
self-attention (`keras_sasa.models.to_attention`), saved as a new `.keras` file."""

import os

from keras_sasa.cli import flags
from keras_sasa.cli import tools
from keras_sasa.cli.flags import UsageError


def add_convert_parser(commands):
    parser = commands.add_parser(
        "convert",
        help="replace a .keras CNN's spatial convolutions by local self-attention",
        description=(
            "Convert a Keras CNN into a SASA model (keras_sasa.models.to_attention): every "
            "spatial Conv2D (kernel larger than 1x1, not depthwise, separable or grouped) "
            "becomes a LocalSelfAttention2D with its filters, strides and dilation, except "
            "the stem's first convolution (--no-keep-stem replaces it too). Every other "
            "layer keeps its weights. Prints the replaced layers and the totals."
        ),
    )
    parser.add_argument("model", metavar="IN.keras", help="the CNN")
    parser.add_argument("output", metavar="OUT.keras", help="the converted model to write")
    parser.add_argument(
        "--kernel-size",
        type=flags.positive_int,
        metavar="K",
        default=7,
        help="odd window size k of the attention (default: 7, the paper's)",
    )
    parser.add_argument(
        "--num-heads",
        type=flags.positive_int,
        metavar="H",
        default=8,
        help="attention heads; must divide every replaced layer's filters (default: 8)",
    )
    parser.add_argument(
        "--no-keep-stem",
        dest="keep_stem",
        action="store_false",
        help="also replace the first spatial convolution (the one reading the image)",
    )
    parser.set_defaults(run=_convert, check=_check)


def _check(args):
    if args.kernel_size % 2 == 0:
        raise UsageError(f"--kernel-size must be odd (a centred window), got {args.kernel_size}")
    tools._check_model_file(args.model)
    if not args.output.endswith(".keras"):
        raise UsageError(f"OUT.keras must end in .keras, got {args.output}")
    if os.path.abspath(args.output) == os.path.abspath(args.model):
        raise UsageError(f"OUT.keras is the input file {args.model}: choose another name")
    parent = os.path.dirname(os.path.abspath(args.output))
    if not os.path.isdir(parent):
        raise UsageError(f"Cannot write {args.output}: no directory {parent}")


def _convert(args):
    from keras_sasa import models

    model = tools._load_model(args.model)
    converted = models.to_attention(
        model, kernel_size=args.kernel_size, num_heads=args.num_heads, keep_stem=args.keep_stem
    )
    print(format_table(model, converted))
    converted.save(args.output)
    print(f"\nWrote {args.output}")


def format_table(model, converted):
    """The replaced layers (name, filters, strides, parameters before and after) and the
    totals of both models."""
    from keras_sasa.layers import LocalSelfAttention2D
    from keras_sasa.models.convert import walk

    old = {layer.name: layer for layer in walk(model)}
    rows = [
        (layer.name, layer.filters, layer.strides, old[layer.name], layer)
        for layer in walk(converted)
        if isinstance(layer, LocalSelfAttention2D)
        and not isinstance(old.get(layer.name), LocalSelfAttention2D)
        and layer.name in old
    ]
    if not rows:
        lines = ["No layer replaced: the model has no spatial Conv2D to replace."]
    else:
        header = ("layer", "filters", "strides", "params before", "params after")
        table = [header] + [
            (
                name,
                str(filters),
                str(strides),
                f"{before.count_params():,}",
                f"{after.count_params():,}",
            )
            for name, filters, strides, before, after in rows
        ]
        widths = [max(len(row[i]) for row in table) for i in range(len(header))]
        lines = [
            "  ".join(
                cell.ljust(width) if i == 0 else cell.rjust(width)
                for i, (cell, width) in enumerate(zip(row, widths, strict=True))
            )
            for row in table
        ]
    lines.append("")
    lines.append(
        f"{len(rows)} layers replaced. Parameters: {model.count_params():,} -> "
        f"{converted.count_params():,}."
    )
    return "\n".join(lines)
