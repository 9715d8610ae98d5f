"""Homologous attention on the CPU without an ``(L, L)`` tensor kept for
backward: the CPU fast path of :func:`.topk_attention`
(no dropout), equal to :func:`..homologous.topk_attention_reference`
(tests compare them)."""
from typing import Optional, Tuple

import torch
from torch import Tensor

from ..homologous import attention_scores_fp32
from .selection import topk_select_with_scores
from . import cpu_kernels


def _compact_index_dtype(num_keys: int) -> torch.dtype:
    """Narrowest integer dtype that holds key positions ``< num_keys``."""
    if num_keys <= 256:
        return torch.uint8
    if num_keys <= 2**15:
        return torch.int16
    return torch.int32


def _dense_probabilities(prefix_probs: Tensor,
                         patch_probs: Tensor,
                         topk_indices: Tensor,
                         buffer: Optional[Tensor] = None) -> Tensor:
    """The ``(M, h, L, L)`` attention probabilities of homologous attention
    from the kept ones.

    Args:
        prefix_probs: ``(M, h, P, L)``, rows of the prefix queries.
        patch_probs: ``(M, h, N, P + K)``, each patch query's probabilities
            on the prefix keys, then on its selected patch keys.
        topk_indices: ``(M, h, N, K)`` the selected patch keys.
        buffer: an ``(M, h, L, L)`` tensor of ``patch_probs``'s dtype to
            overwrite (saves allocating, and page-faulting in, a new one).
    """
    p = prefix_probs.shape[-2]
    seq_len = prefix_probs.shape[-1]
    if buffer is None:
        probs = patch_probs.new_zeros(*patch_probs.shape[:-2], seq_len,
                                      seq_len)
    else:
        probs = buffer.zero_()
    probs[..., :p, :] = prefix_probs
    probs[..., p:, :p] = patch_probs[..., :p]
    probs[..., p:, p:].scatter_(-1, topk_indices.long(), patch_probs[..., p:])
    return probs


def _use_cpu_kernels() -> bool:
    return cpu_kernels.available()


def _topk_softmax(scores: Tensor, num_prefix_tokens: int, top_k: int,
                  scale: float) -> Tuple[Tensor, Tensor, Tensor]:
    """Homologous attention's softmax from ``(M, h, L, L)`` fp32 unscaled
    scores, written over them as the dense probabilities.

    Returns:
        prefix_probs ``(M, h, P, L)``; patch_probs ``(M, h, N, P + K)``, each
        patch query's probabilities on the prefix keys, then on its selected
        keys; topk_indices ``(M, h, N, K)`` long.
    """
    p = num_prefix_tokens
    if _use_cpu_kernels():
        patch_probs, topk_indices = cpu_kernels.topk_softmax_forward(
            scores, p, top_k, scale)
        return scores[..., :p, :].clone(), patch_probs, topk_indices
    # the same as a chain of PyTorch ops (no C compiler)
    prefix_probs = scores[..., :p, :].mul(scale).softmax(-1)
    prefix_logits = scores[..., p:, :p].mul(scale)
    # the patch block becomes the selection's int32 keys in place
    selected, topk_indices = topk_select_with_scores(
        scores[..., p:, p:], top_k, overwrite=True)
    patch_probs = torch.cat((prefix_logits, selected.mul_(scale)),
                            -1).softmax(-1)
    _dense_probabilities(prefix_probs, patch_probs, topk_indices,
                         buffer=scores)
    return prefix_probs, patch_probs, topk_indices


def _topk_softmax_backward(grad_probs: Tensor, prefix_probs: Tensor,
                           patch_probs: Tensor,
                           topk_indices: Tensor) -> Tensor:
    """Turns ``grad_probs`` (fp32) into the gradient of the scaled logits,
    in place; returns the dense probabilities, rebuilt from the kept ones."""
    if _use_cpu_kernels():
        return cpu_kernels.topk_softmax_backward(grad_probs, prefix_probs,
                                                 patch_probs,
                                                 topk_indices.long())
    probs = _dense_probabilities(prefix_probs, patch_probs, topk_indices)
    # dS = P * dP - P * rowsum(P * dP), zero wherever P is zero (unselected
    # keys get no gradient), in place: a fresh (L, L) buffer costs page
    # faults on the CPU
    grad_probs.mul_(probs)
    row_dot = grad_probs.sum(-1, keepdim=True)
    grad_probs.addcmul_(probs, row_dot, value=-1)
    return probs


class _SparseTopKAttention(torch.autograd.Function):
    """Homologous attention that reuses the selection's fp32 scores and
    keeps only the probabilities of the selected keys for backward.

    Forward: one fp32 ``q @ k^T`` gives both the top-k selection and the
    logits; the softmax runs over the ``P + K`` kept logits of each patch
    query and is written, as a dense matrix, over the scores for one
    ``probs @ v``. Backward rebuilds that matrix from the kept probabilities
    and runs the softmax backward with four batched matmuls. Saved: q, k, v,
    the kept probabilities (fp32, ``(M, h, N, P + K)``) and the selection
    (one byte per key when ``L <= 256``) -- no ``(L, L)`` tensor.

    The selection and both softmax passes are one C kernel per direction
    (:mod:`.cpu_kernels`) where it builds, PyTorch ops otherwise.
    Measured on a 2-core CPU, a ViT-B layer at batch 8 (``docs/benchmark.md``).
    """

    @staticmethod
    def forward(ctx, q, k, v, top_k, num_prefix_tokens):
        # (no grad in here; autocast, where on, makes probs @ v run in its
        # dtype, as it does for F.scaled_dot_product_attention)
        scale = q.shape[-1]**-0.5
        probs = attention_scores_fp32(q, k)
        prefix_probs, patch_probs, topk_indices = _topk_softmax(
            probs, num_prefix_tokens, top_k, scale)
        out = probs.to(v.dtype) @ v
        compact = topk_indices.to(_compact_index_dtype(k.shape[-2]))
        ctx.save_for_backward(q, k, v, prefix_probs, patch_probs, compact)
        ctx.scale = scale
        ctx.mark_non_differentiable(topk_indices)
        ctx.set_materialize_grads(False)  # no zeros for the indices' grad
        return out, topk_indices

    @staticmethod
    def backward(ctx, grad_out, _):
        q, k, v, prefix_probs, patch_probs, compact = ctx.saved_tensors
        dtype = q.dtype
        grad_out = grad_out.to(dtype)
        grad_scores = (grad_out @ v.transpose(-2, -1)).float()
        probs = _topk_softmax_backward(grad_scores, prefix_probs, patch_probs,
                                       compact)
        grad_v = probs.to(dtype).transpose(-2, -1) @ grad_out
        grad_scores = grad_scores.to(dtype)
        # the softmax scale goes on the (L, d) results, not the (L, L) input
        grad_q = (grad_scores @ k).mul_(ctx.scale)
        grad_k = (grad_scores.transpose(-2, -1) @ q).mul_(ctx.scale)
        return grad_q, grad_k, grad_v, None, None


def sparse_topk_attention(q: Tensor, k: Tensor, v: Tensor, top_k: int,
                          num_prefix_tokens: int) -> Tuple[Tensor, Tensor]:
    """``(out, topk_indices)`` of homologous attention, through
    :class:`_SparseTopKAttention`."""
    return _SparseTopKAttention.apply(q, k, v, top_k, num_prefix_tokens)
