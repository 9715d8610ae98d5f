"""The fast path of homologous attention: the same result as
:func:`..homologous.topk_attention_reference` (tests compare
outputs, selections and gradients), at less memory and time.

- :mod:`.selection`: the selection through order-preserving int32 keys and
  one ``torch.topk`` (ties to the lower position);
- :mod:`.sparse_attention`: on the CPU, an autograd Function that keeps only
  the selected keys' probabilities for backward, through
- :mod:`.cpu_kernels`: the C kernel (``csrc/topk_softmax.c``, compiled on
  first use) that selects and softmaxes in one pass where a C compiler
  exists; PyTorch ops otherwise.
"""
import torch.nn.functional as F
from torch import Tensor

from ..homologous import TopKAttention, topk_keep_mask
from . import cpu_kernels
from .selection import select_topk_keys
from .sparse_attention import sparse_topk_attention

__all__ = ['cpu_kernels', 'sparse_topk_attention', 'topk_attention']


def topk_attention(q: Tensor,
                   k: Tensor,
                   v: Tensor,
                   top_k: int,
                   num_prefix_tokens: int = 1,
                   dropout_p: float = 0.0) -> TopKAttention:
    """Homologous attention, fast: what the model runs unless
    ``MIXEDAE_FAST_ATTN=0``.

    - on the CPU (no dropout), :func:`sparse_topk_attention` reuses the
      selection's scores and keeps only the probabilities of the selected
      keys for backward, no ``(L, L)`` tensor; selection and softmax are a
      C kernel (:mod:`.cpu_kernels`) where one can be built;
    - elsewhere (and with attention dropout), the selection
      (:func:`.selection.select_topk_keys`) is the boolean mask of
      ``F.scaled_dot_product_attention``, a fused kernel on GPUs (whose
      memory-efficient CUDA kernel keeps the mask, as an additive ``(L, L)``
      bias, for backward). A single kernel that selects and attends in one
      pass is the GPU path to write next; the GPU path is not measured here.

    Args:
        q, k, v: ``(M, h, L, d)``.
    """
    if q.device.type == 'cpu' and dropout_p == 0:
        return TopKAttention(*sparse_topk_attention(
            q, k, v, top_k, num_prefix_tokens))
    topk_indices = select_topk_keys(q, k, top_k, num_prefix_tokens)
    keep = topk_keep_mask(topk_indices, q.shape[-2], num_prefix_tokens)
    out = F.scaled_dot_product_attention(
        q, k, v, attn_mask=keep, dropout_p=dropout_p)
    return TopKAttention(out, topk_indices)
