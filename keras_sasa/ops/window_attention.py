"""Local (neighbourhood) self-attention over 2-D feature maps, as plain tensor functions.

Implements the attention of Ramachandran et al., "Stand-Alone Self-Attention in Vision
Models" (NeurIPS 2019), eq. 2-3: every pixel ij attends to the k x k window N_k(ij) centred
on it, with logits q_ij . k_ab + q_ij . r_{a-i, b-j}, a softmax over the window and a weighted
sum of values.

The functions here own no weights; `keras_sasa.layers.LocalSelfAttention2D` wraps them.

Tensor layout (channels last, heads split out):
    query, key: (batch, height, width, num_heads, key_dim)
    value:      (batch, height, width, num_heads, value_dim)
    row_embeddings:    (kernel_size, num_heads, row_dim)
    column_embeddings: (kernel_size, num_heads, key_dim - row_dim)
Each head uses the first `row_dim` channels of its query against the row offset a-i and the
rest against the column offset b-j. Entry 0 of a table is the offset -(kernel_size // 2).

Three exact implementations:
- `local_attention_reference`: the literal algorithm, which copies every key and value
  kernel_size**2 times (`tf.image.extract_patches` on TensorFlow, one gather elsewhere).
  Slow; it is the oracle for tests.
- `local_attention_blocked`: queries in block_size x block_size blocks attend to their
  (block_size + kernel_size - 1)**2 memory block in one batched matmul, with the keys
  outside each query's own window masked. Dilation runs through a space-to-batch reshape:
  a dilated window is a plain window on each of the dilation**2 interleaved sub-grids.
- `local_attention_unrolled`: a sum over the k*k window offsets, each a 4-D slice of the
  padded keys and values, in `keras.ops` only. It converts to TFLite's builtin op set (no
  tensor above 5-D, no patch extraction) and returns the attention weights; the export
  implementation.
"""

from keras_sasa import _validation as check
from keras_sasa.ops._common import BORDER_MODES
from keras_sasa.ops.blocked import default_block_size
from keras_sasa.ops.blocked import default_chunks
from keras_sasa.ops.blocked import local_attention_blocked
from keras_sasa.ops.reference import local_attention_reference
from keras_sasa.ops.unrolled import local_attention_unrolled

IMPLEMENTATIONS = ("auto", "blocked", "reference", "unrolled")

__all__ = [
    "BORDER_MODES",
    "IMPLEMENTATIONS",
    "default_block_size",
    "default_chunks",
    "local_attention",
    "local_attention_blocked",
    "local_attention_reference",
    "local_attention_unrolled",
]


def local_attention(
    query,
    key,
    value,
    row_embeddings,
    column_embeddings,
    kernel_size,
    dilation_rate=1,
    border="mask",
    scale=None,
    implementation="auto",
    return_attention_scores=False,
    select_mask=False,
):
    """Local attention with the implementation picked by `implementation`.

    `"auto"` takes the blocked implementation, with the block size chosen from the
    spatial size and kernel size (`default_block_size`): it is exact, and it copies each
    key and value into one memory block instead of k*k windows, so it is faster and
    lighter than the reference (docs/performance.md).
    `"reference"` is the extract_patches oracle.
    `"unrolled"` is the export implementation (TFLite builtins, any Keras backend).
    Arguments as for `local_attention_reference`.

    `return_attention_scores=True` also returns the weights,
    `(batch, height, width, num_heads, kernel_size * kernel_size)` float32, row offset
    major. The blocked implementation never forms them, so `"auto"` and `"blocked"` then
    run the unrolled implementation, and the output returned beside the weights comes from
    the same computation as the weights.

    `select_mask` is passed to the blocked implementation (see `local_attention_blocked`);
    the unrolled one always masks with a select, the reference never needs to.
    """
    check.one_of("implementation", implementation, IMPLEMENTATIONS)
    if implementation == "reference":
        fn = local_attention_reference
    elif implementation == "unrolled" or return_attention_scores:
        fn = local_attention_unrolled
    else:
        fn = local_attention_blocked
    extra = {"return_attention_scores": True} if return_attention_scores else {}
    if fn is local_attention_blocked:
        extra["select_mask"] = select_mask
    return fn(
        query,
        key,
        value,
        row_embeddings,
        column_embeddings,
        kernel_size,
        dilation_rate=dilation_rate,
        border=border,
        scale=scale,
        **extra,
    )
