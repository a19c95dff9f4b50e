"""The paper's Tables 1 and 3 beside the parameters and FLOPs of this package's models.

The paper's numbers (Ramachandran et al. 2019, arXiv 1906.05909) are typed in below as
reference values; ours are computed by building each model at 224 x 224 with 1000 classes
and counting its trainable parameters (batch norm's moving statistics are not parameters)
and its FLOPs with `count_flops`.
"""

import functools

import numpy as np

from keras_sasa.models.flops import count_flops
from keras_sasa.models.resnet import SASAResNet26
from keras_sasa.models.resnet import SASAResNet38
from keras_sasa.models.resnet import SASAResNet50

DEPTHS = {"ResNet-26": SASAResNet26, "ResNet-38": SASAResNet38, "ResNet-50": SASAResNet50}

# Table 1 rows: the keyword arguments of the builders that give each variant.
VARIANTS = {
    "Baseline": {"stem": "conv", "attention_stages": ()},
    "Conv-stem + Attention": {"stem": "conv", "attention_stages": (1, 2, 3, 4)},
    "Full Attention": {"stem": "attention", "attention_stages": (1, 2, 3, 4)},
}

# Paper, Table 1: (GFLOPs, params in millions, ImageNet top-1 %).
TABLE_1 = {
    ("ResNet-26", "Baseline"): (4.7, 13.7, 74.5),
    ("ResNet-26", "Conv-stem + Attention"): (4.5, 10.3, 75.8),
    ("ResNet-26", "Full Attention"): (4.7, 10.3, 74.8),
    ("ResNet-38", "Baseline"): (6.5, 19.6, 76.2),
    ("ResNet-38", "Conv-stem + Attention"): (5.7, 14.1, 77.1),
    ("ResNet-38", "Full Attention"): (6.0, 14.1, 76.9),
    ("ResNet-50", "Baseline"): (8.2, 25.6, 76.9),
    ("ResNet-50", "Conv-stem + Attention"): (7.0, 18.0, 77.4),
    ("ResNet-50", "Full Attention"): (7.2, 18.0, 77.6),
}

# Paper, Table 3 (ResNet-50 with the conv stem; top-1 on a held-out split):
# attention groups -> (GFLOPs, params in millions, top-1 %). The other groups use 3x3 convs.
TABLE_3 = {
    (1, 2, 3, 4): (7.0, 18.0, 80.2),
    (2, 3, 4): (7.3, 18.1, 80.7),
    (3, 4): (7.5, 18.5, 80.7),
    (4,): (8.0, 20.8, 80.2),
    (): (8.2, 25.6, 79.5),
    (1,): (7.9, 25.5, 79.7),
    (1, 2): (7.8, 25.0, 79.6),
    (1, 2, 3): (7.2, 22.7, 79.9),
}


@functools.lru_cache(maxsize=None)
def measure(depth, stem, attention_stages):
    """(trainable parameters, FLOPs) of `DEPTHS[depth]` built at 224 x 224, 1000 classes."""
    model = DEPTHS[depth](input_shape=(224, 224, 3), stem=stem, attention_stages=attention_stages)
    params = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    return params, count_flops(model)


def _row(label, paper, ours):
    (paper_flops, paper_params, top1), (params, flops) = paper, ours
    params, flops = params / 1e6, flops / 1e9
    return (
        f"{label:<42} {paper_flops:>5.1f} {flops:>6.2f} {100 * (flops / paper_flops - 1):>+6.1f}%"
        f"  {paper_params:>5.1f} {params:>6.2f} {100 * (params / paper_params - 1):>+6.1f}%"
        f"  {top1:>5.1f}"
    )


def _header(title):
    return [
        title,
        f"{'':<42} {'GFLOPs':^20}  {'Params (M)':^20}  Top-1",
        f"{'':<42} {'paper':>5} {'ours':>6} {'diff':>7}  {'paper':>5} {'ours':>6} {'diff':>7}"
        "  paper",
    ]


def paper_table():
    """The paper's Tables 1 and 3 beside this package's parameter counts and FLOPs.

    Builds the 15 models involved (no forward pass).

    Returns:
        The tables as a printable string.
    """
    lines = _header("Table 1: ImageNet, 224 x 224, 1000 classes (paper: Ramachandran et al. 2019)")
    for (depth, variant), paper in TABLE_1.items():
        kwargs = VARIANTS[variant]
        ours = measure(depth, kwargs["stem"], kwargs["attention_stages"])
        lines.append(_row(f"{depth} {variant}", paper, ours))
    lines += [""] + _header("Table 3: ResNet-50, conv stem; groups using attention")
    for stages, paper in TABLE_3.items():
        convs = ",".join(str(g) for g in (1, 2, 3, 4) if g not in stages) or "-"
        label = f"conv {convs} / attention {','.join(map(str, stages)) or '-'}"
        lines.append(_row(label, paper, measure("ResNet-50", "conv", stages)))
    lines += [
        "",
        "Params: trainable weights (batch norm moving statistics excluded). FLOPs: one image,",
        "a multiply-add = 2, convolutions, dense and attention layers only (count_flops).",
    ]
    return "\n".join(lines)
