"""The attention stem's equations, one pixel at a time, in NumPy: the tests' ground truth."""

import numpy as np


def _softmax(logits):
    weights = np.exp(logits - logits.max())
    return weights / weights.sum()


def window_members(i, j, height, width, kernel_size, window):
    """[(a, b, row_pos, col_pos)]: the image pixels ab in the window of pixel ij.

    row_pos/col_pos is the value's position inside the window, the index of emb_row/emb_col.
    """
    k = kernel_size
    if window == "block":
        top, left = (i // k) * k, (j // k) * k
        cells = [(top + r, left + c, r, c) for r in range(k) for c in range(k)]
    else:
        first = -((k - 1) // 2)
        cells = [(i + first + r, j + first + c, r, c) for r in range(k) for c in range(k)]
    return [(a, b, r, c) for a, b, r, c in cells if 0 <= a < height and 0 <= b < width]


def attention_stem_loops(x, wq, wk, wv, row, col, nu, num_heads, kernel_size, window, scale=None):
    """y_ij = sum_ab softmax_ab(s q_ij.k_ab) (sum_m p(a,b,m) W_V^m) x_ab, per head.

    x: (B, H, W, C); wq, wk: (C, F); wv: (M, C, F); row, col: (k, D); nu: (M, D).
    """
    batch, height, width, _ = x.shape
    filters = wq.shape[1]
    head = filters // num_heads
    scale = 1.0 / np.sqrt(head) if scale is None else scale
    out = np.zeros((batch, height, width, filters))
    for n in range(batch):
        for i in range(height):
            for j in range(width):
                members = window_members(i, j, height, width, kernel_size, window)
                q = x[n, i, j] @ wq
                for h in range(num_heads):
                    part = slice(h * head, (h + 1) * head)
                    logits, values = [], []
                    for a, b, r, c in members:
                        k = x[n, a, b] @ wk
                        p = _softmax(np.array([(row[r] + col[c]) @ nu[m] for m in range(len(nu))]))
                        mixed = sum(p[m] * wv[m] for m in range(len(nu)))
                        logits.append(scale * (q[part] @ k[part]))
                        values.append((x[n, a, b] @ mixed)[part])
                    out[n, i, j, part] = _softmax(np.array(logits)) @ np.array(values)
    return out
