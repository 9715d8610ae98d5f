"""Homologous attention: each patch query attends to the cls token and to
its ``K`` highest-scoring patch keys only.

The readable path is :func:`topk_attention`'s second half: select the keys
(:func:`~.selection.select_topk_keys`), turn them into a boolean mask
(:func:`topk_keep_mask`), run ``F.scaled_dot_product_attention``. On the
CPU the same result comes from :mod:`.fast`, which tests hold equal to
:func:`topk_attention_reference`.
"""
from typing import NamedTuple, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from . import fast
from .mixing import check_mixing_shapes
from .selection import select_topk_keys, topk_select


class TopKAttention(NamedTuple):
    """Result of :func:`topk_attention`.

    out: ``(M, h, L, d)`` attention output.
    topk_indices: ``(M, h, N, K)`` long, the patch keys (0-based patch
        positions, cls excluded) each patch query selected.
    """
    out: Tensor
    topk_indices: Tensor


def topk_attention(q: Tensor,
                   k: Tensor,
                   v: Tensor,
                   top_k: int,
                   num_prefix_tokens: int = 1,
                   dropout_p: float = 0.0) -> TopKAttention:
    """Scaled dot-product attention restricted to each patch query's top-k
    patch keys (plus the prefix keys); softmax over the kept keys only.

    The selection is made without gradient from fp32 scores
    (:func:`attention_scores_fp32`, :func:`topk_select`). Then:

    - on the CPU (no dropout), the fast path (:mod:`.fast`) reuses the
      selection's scores and keeps only the probabilities of the selected
      keys for backward, no ``(L, L)`` tensor; selection and softmax are a
      C kernel (:mod:`.fast.cpu_kernels`) where one can be built;
    - elsewhere (and with attention dropout), the selection is the boolean
      mask of ``F.scaled_dot_product_attention``, a fused kernel on GPUs
      (whose memory-efficient CUDA kernel keeps the mask, as an additive
      ``(L, L)`` bias, for backward). A single kernel that selects and
      attends in one pass is the GPU path to write next; the GPU path is not
      measured here.

    Equals :func:`topk_attention_reference` (tests compare outputs and
    gradients).

    Args:
        q, k, v: ``(M, h, L, d)``.

    Returns:
        :class:`TopKAttention`.
    """
    if q.device.type == 'cpu' and dropout_p == 0:
        return TopKAttention(*fast.sparse_topk_attention(
            q, k, v, top_k, num_prefix_tokens))
    topk_indices = select_topk_keys(q, k, top_k, num_prefix_tokens)
    keep = topk_keep_mask(topk_indices, q.shape[-2], num_prefix_tokens)
    out = F.scaled_dot_product_attention(
        q, k, v, attn_mask=keep, dropout_p=dropout_p)
    return TopKAttention(out, topk_indices)


def topk_keep_mask(topk_indices: Tensor, seq_len: int,
                   num_prefix_tokens: int = 1) -> Tensor:
    """Boolean attention mask from a top-k selection.

    Every patch query keeps the prefix keys plus its selected patch keys;
    prefix queries keep every key.

    Args:
        topk_indices: ``(..., N, K)`` from :func:`topk_select`.
        seq_len: ``L = N + P``.

    Returns:
        ``(..., L, L)`` bool, True = may attend.
    """
    p = num_prefix_tokens
    shape = (*topk_indices.shape[:-2], seq_len, seq_len)
    keep = torch.ones(shape, dtype=torch.bool, device=topk_indices.device)
    patch_keep = keep[..., p:, p:]
    patch_keep.zero_()
    patch_keep.scatter_(-1, topk_indices.long(), True)
    return keep


def topk_attention_mask(scores: Tensor, k: int,
                        num_prefix_tokens: int = 1) -> Tuple[Tensor, Tensor]:
    """Boolean attention mask of homologous attention from given scores.

    Args:
        scores: ``(..., L, L)`` attention logits, prefix tokens first.
        k: patch keys kept per patch query.
        num_prefix_tokens: tokens before the patches (1 for cls).

    Returns:
        keep: ``(..., L, L)`` bool, True = may attend (see
            :func:`topk_keep_mask`).
        topk_indices: ``(..., L - P, k)`` long patch positions (0-based,
            prefix excluded) chosen by each patch query.
    """
    p = num_prefix_tokens
    topk_indices = topk_select(scores[..., p:, p:], k)
    return topk_keep_mask(topk_indices, scores.shape[-1], p), topk_indices


def topk_attention_reference(q: Tensor,
                             k: Tensor,
                             v: Tensor,
                             top_k: int,
                             num_prefix_tokens: int = 1,
                             dropout_p: float = 0.0) -> TopKAttention:
    """Homologous attention written out: full scores, mask, softmax.

    Keeps the ``(M, h, L, L)`` probabilities for backward; the model runs
    :func:`topk_attention`, which must equal this (tests compare them).

    Args:
        q, k, v: ``(M, h, L, d)``.
    """
    topk_indices = select_topk_keys(q, k, top_k, num_prefix_tokens)
    keep = topk_keep_mask(topk_indices, q.shape[-2], num_prefix_tokens)
    scale = q.shape[-1]**-0.5
    scores = (q * scale) @ k.transpose(-2, -1)
    attn = scores.masked_fill(~keep, float('-inf')).softmax(dim=-1)
    if dropout_p > 0:
        attn = F.dropout(attn, p=dropout_p)
    return TopKAttention(attn @ v, topk_indices)


def homologous_accuracy(topk_indices: Tensor, owner: Tensor) -> Tensor:
    """Fraction of top-k selected keys that share the query's source image.

    Args:
        topk_indices: ``(M, h, N, K)`` from :func:`topk_attention`.
        owner: ``(M, N)``.

    The query's own key counts when the top-k selects it (it is homologous
    to itself), so a random selection scores
    :func:`homologous_accuracy_chance` ``= K / N = 1 / G``.

    Returns:
        Scalar tensor in [0, 1].
    """
    # one gather from the (M, N) owners with the flattened selection: an
    # (M, h, N, N) expanded source makes the CPU gather several times slower
    num_mixed = owner.shape[0]
    selected_owner = owner.gather(1, topk_indices.reshape(num_mixed, -1))
    query_owner = owner[:, None, :, None]
    is_homologous = selected_owner.view(topk_indices.shape) == query_owner
    return is_homologous.float().mean()


def homologous_accuracy_chance(num_patches: int, group_size: int) -> float:
    """Expected :func:`homologous_accuracy` of a uniformly random top-k.

    Each of a query's ``K = N / G`` picks among the ``N`` keys (its own
    included) is homologous with probability ``K / N``, which is ``1 / G``
    whatever the grid: 0.25 for the paper's ``G = 4``.
    """
    check_mixing_shapes(group_size, num_patches, group_size)
    return (num_patches // group_size) / num_patches
