"""Homology, what the method teaches: which patches come from one source
image. Homologous attention (each patch query attends to the cls token and
its ``K`` highest-scoring patch keys), how often its keys are homologous,
and the homologous contrastive loss that teaches the encoder to tell.

The attention here is written out: the readable path (what the model runs
with ``MIXEDAE_FAST_ATTN=0``, see ``models/backbones/mixedae_vit.py``) and
the reference every optimised path is held equal to. Select the keys from
fp32 scores (:func:`topk_select_reference`, a stable sort), turn them into a
boolean mask (:func:`topk_keep_mask`), softmax over the kept keys
(:func:`topk_attention_reference`). The fast path, :mod:`.fast`, computes
the same with int32 ranking keys, a C kernel on the CPU and a fused kernel
elsewhere.
"""
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from .mixing import check_mixing_shapes


class TopKAttention(NamedTuple):
    """Result of :func:`topk_attention_reference` (and of the fast path's
    ``ops.topk_attention``).

    out: ``(M, h, L, d)`` attention output.
    topk_indices: ``(M, h, N, K)`` long, the patch keys (0-based patch
        positions, cls excluded) each patch query selected.
    """
    out: Tensor
    topk_indices: Tensor


def attention_scores_fp32(q: Tensor, k: Tensor) -> Tensor:
    """``q @ k^T`` in fp32, without gradient, even under autocast.

    bf16 keeps 8 significant bits, so keys whose fp32 scores differ would
    tie (or swap) and the top-k selection would depend on the autocast
    dtype. The softmax scale is left out: a positive factor does not change
    a ranking.

    Args:
        q, k: ``(M, h, L, d)``.

    Returns:
        ``(M, h, L, L)`` fp32.
    """
    with torch.no_grad(), torch.autocast(q.device.type, enabled=False):
        # k is a strided view of the qkv projection: made contiguous first,
        # its transpose is a layout the batched matmul reads as is, where
        # transposing the view would cost a slow transposing copy
        return q.float() @ k.float().contiguous().transpose(-2, -1)


def topk_select_reference(patch_scores: Tensor, k: int) -> Tensor:
    """The selection rule of homologous attention: the ``k`` highest
    scores, exact ties going to the lower key position.

    A stable descending sort keeps tied scores in position order. bf16 and
    fp16 scores are ranked as their exact fp32 values; adding ``0.0`` turns
    ``-0.0`` into ``0.0``, an equal score. (NaN scores rank highest here;
    the fast path ranks a NaN with its sign bit set lowest.)

    Args:
        patch_scores: ``(..., N, N)`` query-key scores between patches.
        k: keys kept per query.

    Returns:
        ``(..., N, k)`` long key positions, highest score first.
    """
    num_keys = patch_scores.shape[-1]
    if not 0 < k <= num_keys:
        raise ValueError(f'top-k must be in [1, {num_keys}], got {k}')
    if patch_scores.dtype in (torch.bfloat16, torch.float16):
        patch_scores = patch_scores.float()
    ranked = (patch_scores + 0.0).sort(dim=-1, descending=True, stable=True)
    return ranked.indices[..., :k]


def topk_keep_mask(topk_indices: Tensor, seq_len: int,
                   num_prefix_tokens: int = 1) -> Tensor:
    """Boolean attention mask from a top-k selection.

    Every patch query keeps the prefix keys plus its selected patch keys;
    prefix queries keep every key.

    Args:
        topk_indices: ``(..., N, K)`` selected patch keys.
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


def topk_attention_reference(q: Tensor,
                             k: Tensor,
                             v: Tensor,
                             top_k: int,
                             num_prefix_tokens: int = 1,
                             dropout_p: float = 0.0) -> TopKAttention:
    """Scaled dot-product attention restricted to each patch query's top-k
    patch keys (plus the prefix keys); softmax over the kept keys only.

    The selection is made without gradient from fp32 scores. Keeps the
    ``(M, h, L, L)`` probabilities for backward; the fast path
    (``ops.topk_attention``) must equal this (tests compare outputs and
    gradients).

    Args:
        q, k, v: ``(M, h, L, d)``.

    Returns:
        :class:`TopKAttention`.
    """
    p = num_prefix_tokens
    topk_indices = topk_select_reference(
        attention_scores_fp32(q, k)[..., p:, p:], top_k)
    return TopKAttention(
        attention_over_keys(q, k, v, topk_indices, p, dropout_p),
        topk_indices)


def attention_over_keys(q: Tensor, k: Tensor, v: Tensor,
                        topk_indices: Tensor, num_prefix_tokens: int = 1,
                        dropout_p: float = 0.0) -> Tensor:
    """Attention of every patch query over the prefix keys and the patch
    keys ``topk_indices`` names (``(M, h, N, K)``), whoever chose them:
    ``q, k, v (M, h, L, d)`` -> ``(M, h, L, d)``."""
    keep = topk_keep_mask(topk_indices, q.shape[-2], num_prefix_tokens)
    scale = q.shape[-1]**-0.5
    scores = (q * scale) @ k.transpose(-2, -1)
    attn = scores.masked_fill(~keep, float('-inf')).softmax(dim=-1)
    if dropout_p > 0:
        attn = F.dropout(attn, p=dropout_p)
    return attn @ v


def homologous_target(owner: Tensor) -> Tensor:
    """``(M, N, N)`` bool, True where two positions come from one image."""
    return owner[:, :, None] == owner[:, None, :]


def homologous_accuracy(topk_indices: Tensor, owner: Tensor) -> Tensor:
    """Fraction of top-k selected keys that share the query's source image.

    Args:
        topk_indices: ``(M, h, N, K)`` from homologous attention.
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


def homologous_contrastive_loss(features: Tensor, owner: Tensor,
                                temperature: float) -> Tensor:
    """Supervised contrastive loss over the patch tokens of each mixed sample.

    For token ``i`` the positives are the other tokens with the same owner,
    the candidates are all other tokens of its mixed sample:
    ``-mean_{p in P(i)} log softmax_{a != i}(z_i . z_a / tau)[p]``,
    averaged over tokens and samples.

    Computed in fp32 even under autocast: with ``tau = 0.25`` the logits
    span [-4, 4], where bf16 keeps only two to three significant digits.

    Args:
        features: ``(M, N, C)``; L2-normalised inside.
        owner: ``(M, N)``.
        temperature: ``tau``.

    Returns:
        Scalar fp32 loss.
    """
    with torch.autocast(device_type=features.device.type, enabled=False):
        z = F.normalize(features.float(), dim=-1)
        logits = z @ z.transpose(1, 2) / temperature
        num_patches = owner.shape[1]
        self_mask = torch.eye(num_patches, dtype=torch.bool, device=z.device)
        logits = logits.masked_fill(self_mask, float('-inf'))
        log_prob = logits.log_softmax(dim=-1)
        positives = homologous_target(owner) & ~self_mask
        # -inf * 0 on the diagonal would be NaN: zero it before the sum.
        log_prob = log_prob.masked_fill(self_mask, 0.0)
        pos_log_prob = (log_prob * positives).sum(-1) / positives.sum(
            -1).clamp(min=1)
        return -pos_log_prob.mean()
