"""ONNX Runtime's CPU time for the ops a masked softmax over attention blocks is made of.

Two questions behind the blocked attention's inference graph (docs/serving.md):

1. How fast is Softmax on rows where masked logits sit far below the others? Rows of
   (b*b queries, M*M keys) logits of the 224 x 224 model's first layer, 70% of each row
   masked by adding a constant.
2. Which way of masking (a select against a per-query value) is fast: Where, the
   Mul/Mul/Add that tf2onnx writes for a float select, or other products and differences?
3. The relative logits: broadcast Adds over the short memory axes, or a matmul?

Each graph is timed alone in ONNX Runtime with one thread, median of 15 runs.

    python benchmarks/onnx_ops.py benchmarks/results/onnx_ops.md

writes the Markdown tables to the argument (and prints them).
"""

import sys
import time

import _markdown
import numpy as np
import onnxruntime
from onnx import TensorProto
from onnx import helper

from keras_sasa.benchmark import machine_description

# The 224 x 224 model's first attention layer at batch 1: 8 heads, 196 blocks of 4 x 4
# queries, each over a 10 x 10 memory block.
LOGITS = [1, 8, 196, 16, 100]
RUNS = 15


def time_graph(nodes, inputs, feeds):
    """Median milliseconds of one run of the graph `nodes` (output "y")."""
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info(name, kind, shape) for name, kind, shape in inputs],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    session = onnxruntime.InferenceSession(
        model.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )
    session.run(None, feeds)
    times = []
    for _ in range(RUNS):
        start = time.perf_counter()
        session.run(None, feeds)
        times.append(time.perf_counter() - start)
    return 1e3 * float(np.median(times))


def softmax_rows(rng):
    rows = int(np.prod(LOGITS[:-1]))
    logits = rng.normal(size=(rows, LOGITS[-1])).astype("float32")
    masked = rng.random(logits.shape) < 0.7
    nodes = [
        helper.make_node("Add", ["x", "bias"], ["z"]),
        helper.make_node("Softmax", ["z"], ["y"], axis=-1),
    ]
    inputs = [("x", TensorProto.FLOAT, logits.shape), ("bias", TensorProto.FLOAT, logits.shape)]
    lines = ["| masked logits get | Add + Softmax ms |", "|---|---|"]
    for value in (0.0, -20.0, -30.0, -100.0, -1e3, -1e9):
        bias = np.where(masked, value, 0.0).astype("float32")
        ms = time_graph(nodes, inputs, {"x": logits, "bias": bias})
        lines.append(f"| {value:g} | {ms:.1f} |")
    return lines


def masks(rng):
    logits = rng.normal(size=LOGITS).astype("float32")
    centre = rng.normal(size=LOGITS[:-1] + [1]).astype("float32")
    inside = rng.random([1, 1] + LOGITS[2:]) < 0.5
    inside_f = inside.astype("float32")
    outside_f = 1.0 - inside_f
    f, b = TensorProto.FLOAT, TensorProto.BOOL
    cases = {
        "Where(inside, logits, centre)": (
            [helper.make_node("Where", ["inside", "x", "c"], ["y"])],
            [("inside", b, inside.shape), ("x", f, LOGITS), ("c", f, centre.shape)],
            {"inside": inside, "x": logits, "c": centre},
        ),
        "logits * inside + centre * outside (tf2onnx's select)": (
            [
                helper.make_node("Mul", ["in", "x"], ["a"]),
                helper.make_node("Mul", ["c", "out"], ["o"]),
                helper.make_node("Add", ["a", "o"], ["y"]),
            ],
            [
                ("in", f, inside.shape),
                ("out", f, inside.shape),
                ("x", f, LOGITS),
                ("c", f, centre.shape),
            ],
            {"in": inside_f, "out": outside_f, "x": logits, "c": centre},
        ),
        "logits - (logits - centre) * outside (the select mask)": (
            [
                helper.make_node("Sub", ["x", "c"], ["d"]),
                helper.make_node("Mul", ["d", "out"], ["o"]),
                helper.make_node("Sub", ["x", "o"], ["y"]),
            ],
            [("out", f, inside.shape), ("x", f, LOGITS), ("c", f, centre.shape)],
            {"out": outside_f, "x": logits, "c": centre},
        ),
        "one Mul, logits * inside": (
            [helper.make_node("Mul", ["x", "in"], ["y"])],
            [("in", f, inside.shape), ("x", f, LOGITS)],
            {"in": inside_f, "x": logits},
        ),
        "one Mul, centre * outside (broadcast both ways)": (
            [helper.make_node("Mul", ["c", "out"], ["y"])],
            [("out", f, inside.shape), ("c", f, centre.shape)],
            {"out": outside_f, "c": centre},
        ),
    }
    lines = [f"| masking {LOGITS} logits | ms |", "|---|---|"]
    for name, (nodes, inputs, feeds) in cases.items():
        lines.append(f"| {name} | {time_graph(nodes, inputs, feeds):.1f} |")
    return lines


def relative_logits(rng):
    """Adding the row and column relative logits to the (M, M) logits of each query: two
    broadcast Adds over the short memory axes, or one matmul of each query's 2M row and
    column logits against the 0/1 (2M, M*M) spreading matrix, then one Add."""
    queries, mem = int(np.prod(LOGITS[:-1])), int(np.sqrt(LOGITS[-1]))
    logits = rng.normal(size=(queries, mem, mem)).astype("float32")
    rows = rng.normal(size=(queries, mem, 1)).astype("float32")
    cols = rng.normal(size=(queries, 1, mem)).astype("float32")
    axes = np.concatenate([rows[:, :, 0], cols[:, 0, :]], axis=1)
    spread = np.zeros((2 * mem, mem * mem), "float32")
    spread[np.arange(mem * mem) // mem, np.arange(mem * mem)] = 1.0
    spread[mem + np.arange(mem * mem) % mem, np.arange(mem * mem)] = 1.0
    f = TensorProto.FLOAT
    broadcast = time_graph(
        [helper.make_node("Add", ["x", "r"], ["a"]), helper.make_node("Add", ["a", "c"], ["y"])],
        [("x", f, logits.shape), ("r", f, rows.shape), ("c", f, cols.shape)],
        {"x": logits, "r": rows, "c": cols},
    )
    flat = logits.reshape(queries, mem * mem)
    matmul = time_graph(
        [
            helper.make_node("MatMul", ["axes", "spread"], ["s"]),
            helper.make_node("Add", ["x", "s"], ["y"]),
        ],
        [("x", f, flat.shape), ("axes", f, axes.shape), ("spread", f, spread.shape)],
        {"x": flat, "axes": axes, "spread": spread},
    )
    return [
        f"| adding relative logits to {queries} x {mem} x {mem} logits | ms |",
        "|---|---|",
        f"| two broadcast Adds, (Q, M, 1) and (Q, 1, M) | {broadcast:.1f} |",
        f"| MatMul (Q, 2M) x (2M, M*M), then Add | {matmul:.1f} |",
    ]


def table():
    rng = np.random.default_rng(0)
    return [
        f"ONNX Runtime {onnxruntime.__version__}, one thread, median of {RUNS} runs; "
        f"{machine_description()}.",
        "",
        *softmax_rows(rng),
        "",
        *masks(rng),
        "",
        *relative_logits(rng),
    ]


if __name__ == "__main__":
    sys.exit(_markdown.main(sys.argv[1:], __file__, table))
