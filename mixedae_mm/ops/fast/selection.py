"""The fast path's top-k selection: the rule of
:func:`..homologous.topk_select_reference` (the ``k`` highest
fp32 scores, exact ties going to the lower key position) through
order-preserving int32 keys and one ``torch.topk``, the same on every fast
path (PyTorch ops, the C kernel, any device). Tests hold it equal to the
reference's stable sort."""
from typing import Tuple

import torch
from torch import Tensor

from ..homologous import attention_scores_fp32, topk_keep_mask


def topk_select(patch_scores: Tensor, k: int) -> Tensor:
    """The selection rule of homologous attention, shared by every path:
    the ``k`` highest scores, exact ties going to the lower key position.

    Args:
        patch_scores: ``(..., N, N)`` query-key scores between patches.
        k: keys kept per query.

    Returns:
        ``(..., N, k)`` long key positions, in no particular order (see
        :func:`topk_select_with_scores`).
    """
    return _ranked_topk(patch_scores, k)[1]


def topk_select_with_scores(patch_scores: Tensor,
                            k: int,
                            overwrite: bool = False) -> Tuple[Tensor, Tensor]:
    """:func:`topk_select` that also returns the selected scores.

    fp32 scores are ranked through order-preserving int32 keys
    (:func:`ordered_int32_keys`): the same order as the floats (``-0.0`` and
    ``0.0`` tie, as they compare equal). Each key is widened to int64 with
    the reversed key position in its low bits, so no two are equal and
    ``torch.topk`` (whose choice among tied values is an implementation
    detail) takes tied scores at the lower position, on every device and in
    the C kernel alike (``csrc/topk_softmax.c``). The selected keys map back
    to the exact fp32 scores (``-0.0`` comes back as ``0.0``). bf16 and fp16
    scores are ranked as their exact fp32 values; fp64 scores by a stable
    sort (the same rule, without rounding them to fp32).

    Args:
        overwrite: build the int32 keys in ``patch_scores``'s own memory
            (which then holds them, not the scores) instead of a copy.

    Returns:
        scores ``(..., N, k)`` (dtype of ``patch_scores``) and long key
        positions ``(..., N, k)``, in no particular order.
    """
    selected, indices = _ranked_topk(patch_scores, k, overwrite)
    if selected.dtype == torch.int32:  # keys of fp32 scores: mapped back
        selected = _flip_negative_magnitudes(selected).view(torch.float32)
    return selected.to(patch_scores.dtype), indices


def _ranked_topk(patch_scores: Tensor,
                 k: int,
                 overwrite: bool = False) -> Tuple[Tensor, Tensor]:
    """``topk`` by the int32 keys of the fp32 scores, ties to the lower
    position; returns the selected keys (int32; fp64 scores: the scores
    themselves) and positions."""
    num_keys = patch_scores.shape[-1]
    if not 0 < k <= num_keys:
        raise ValueError(f'top-k must be in [1, {num_keys}], got {k}')
    if patch_scores.dtype == torch.float64:  # not rounded to fp32: a
        # stable sort keeps tied scores in position order
        ranked = patch_scores.sort(dim=-1, descending=True, stable=True)
        return ranked.values[..., :k], ranked.indices[..., :k]
    if patch_scores.dtype != torch.float32:  # bf16, fp16: exact in fp32
        patch_scores, overwrite = patch_scores.float(), True
    position_bits = max(1, (num_keys - 1).bit_length())
    reversed_positions = torch.arange(
        num_keys - 1, -1, -1, device=patch_scores.device)
    # shifted and tagged in place: one int64 copy of the scores at a time
    unique_keys = ordered_int32_keys(patch_scores, in_place=overwrite).long()
    unique_keys.bitwise_left_shift_(position_bits).bitwise_or_(
        reversed_positions)
    selected, indices = unique_keys.topk(k, dim=-1, sorted=False)
    return (selected >> position_bits).int(), indices


def ordered_int32_keys(scores: Tensor, in_place: bool = False) -> Tensor:
    """int32 keys that sort like the fp32 ``scores`` (same shape; a new
    tensor, or ``scores``'s own memory with ``in_place``).

    IEEE floats of one sign compare like their bit patterns read as signed
    integers; for negative floats that order is reversed, so their 31
    magnitude bits are flipped. Adding ``0.0`` first turns ``-0.0`` into
    ``0.0`` so that the two zeros, equal as floats, stay tied. NaNs end up
    beyond +-inf, by their sign bit.
    """
    bits = scores.add_(0.0) if in_place else scores + 0.0
    return _flip_negative_magnitudes(bits.view(torch.int32))


def _flip_negative_magnitudes(bits: Tensor) -> Tensor:
    """Flip the 31 low bits of negative int32s, in place; its own inverse."""
    return bits.bitwise_xor_((bits >> 31).bitwise_and_(0x7fffffff))


def select_topk_keys(q: Tensor, k: Tensor, top_k: int,
                     num_prefix_tokens: int = 1) -> Tensor:
    """Each patch query's ``top_k`` patch keys, chosen without gradient from
    :func:`attention_scores_fp32` by :func:`topk_select`.

    Args:
        q, k: ``(M, h, L, d)``, prefix (cls) tokens first.

    Returns:
        ``(M, h, N, top_k)`` long patch positions (0-based, prefix
        excluded).
    """
    p = num_prefix_tokens
    return topk_select(attention_scores_fp32(q, k)[..., p:, p:], top_k)


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
