"""The paper's equation, one pixel at a time, in NumPy: the ground truth of the tests."""

import numpy as np


def local_attention_loops(
    q, k, v, row_table, col_table, kernel_size, dilation_rate=1, border="mask", scale=None
):
    """y_ij = sum_ab softmax_ab(q_ij.k_ab + q_ij.r_{a-i,b-j}) v_ab over the k x k window.

    q, k: (B, H, W, N, D); v: (B, H, W, N, Dv); row_table: (k, N, Dr); col_table: (k, N, D-Dr).
    """
    batch, height, width, heads, key_dim = q.shape
    half = kernel_size // 2
    scale = 1.0 / np.sqrt(key_dim) if scale is None else scale
    out = np.zeros(v.shape, dtype=np.float64)
    for n in range(batch):
        for i in range(height):
            for j in range(width):
                for h in range(heads):
                    logits, values = [], []
                    for di in range(-half, half + 1):
                        for dj in range(-half, half + 1):
                            a, b = i + di * dilation_rate, j + dj * dilation_rate
                            inside = 0 <= a < height and 0 <= b < width
                            if not inside and border == "mask":
                                continue
                            key = k[n, a, b, h] if inside else np.zeros(key_dim)
                            val = v[n, a, b, h] if inside else np.zeros(v.shape[-1])
                            rel = np.concatenate([row_table[di + half, h], col_table[dj + half, h]])
                            query = q[n, i, j, h]
                            logits.append(scale * (query @ key + query @ rel))
                            values.append(val)
                    logits = np.array(logits, dtype=np.float64)
                    weights = np.exp(logits - logits.max())
                    weights /= weights.sum()
                    out[n, i, j, h] = weights @ np.array(values)
    return out
