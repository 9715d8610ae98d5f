"""Pure tensor functions of MixedAE.

Everything the method adds on top of MAE lives here as plain functions of
tensors: no registries, no modules, no state.  The registered classes in
``mixedae_mm.models`` are thin wrappers around these.

Shape glossary used in every docstring:

- ``B``  images in the batch (per rank)
- ``G``  mixing group size (``1 / mixing_ratio``; 4 in the paper)
- ``M``  mixed samples, ``M = B // G``
- ``N``  patches per image, ``K = N // G`` patches owned by each image
- ``L``  tokens of a sequence including the cls token, ``L = N + 1``
- ``h``  attention heads

Image ``g`` of group ``m`` is batch element ``b = m * G + g``: groups are
consecutive images, which the shuffling sampler makes a random grouping.
"""
from typing import NamedTuple, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

if __package__:  # inside mixedae_mm; a copy of this file on its own (it
    # needs only torch) runs homologous attention as PyTorch ops
    from . import cpu_kernels
else:
    cpu_kernels = None


def check_mixing_shapes(batch_size: int, num_patches: int,
                        group_size: int) -> None:
    """Raise a ValueError that says what to change if ``B`` or ``N`` does not
    split into groups of ``G``."""
    if group_size < 1:
        raise ValueError(f'mixing group size must be >= 1, got {group_size}')
    if num_patches % group_size:
        raise ValueError(
            f'MixedAE needs the number of patches per image ({num_patches}) '
            f'to be divisible by the mixing group size {group_size}: pick '
            f'img_size/patch_size so that (img_size/patch_size)^2 is a '
            f'multiple of {group_size}, or change mixing_ratio.')
    if batch_size % group_size:
        raise ValueError(
            f'MixedAE mixes groups of {group_size} consecutive images, but '
            f'this batch has {batch_size} images. Use a per-GPU batch size '
            f'(train_dataloader.batch_size; gradient accumulation does not '
            f'change it) that is a multiple of {group_size} and '
            f'drop_last=True in the train dataloader so the last, smaller '
            f'batch is not used.')


# --------------------------------------------------------------------------
# Mixing
# --------------------------------------------------------------------------
def sample_partition(num_mixed: int,
                     num_patches: int,
                     group_size: int,
                     device=None,
                     generator: Optional[torch.Generator] = None) -> Tensor:
    """Draw a random partition of the patch grid for every mixed sample.

    Each mixed sample gets a uniformly random permutation of the ``N``
    positions cut into ``G`` consecutive parts of ``K = N // G``; part ``g``
    is owned by image ``g`` of the group.

    Args:
        num_mixed: ``M``, number of mixed samples (groups).
        num_patches: ``N``.
        group_size: ``G``; must divide ``N``.

    Returns:
        owner: ``(M, N)`` long, ``owner[m, n]`` in ``[0, G)`` is the group
        slot whose patch sits at position ``n`` of mixed sample ``m``.
    """
    check_mixing_shapes(num_mixed * group_size, num_patches, group_size)
    noise = torch.rand(
        num_mixed, num_patches, device=device, generator=generator)
    # rank of each position in a random order; the first K ranks -> slot 0...
    rank = noise.argsort(dim=1).argsort(dim=1)
    return rank // (num_patches // group_size)


def mix_tokens(tokens: Tensor, owner: Tensor) -> Tensor:
    """Mix per-image patch tokens into one sequence per group.

    Args:
        tokens: ``(B, N, C)`` with ``B = M * G``.
        owner: ``(M, N)`` from :func:`sample_partition`.

    Returns:
        ``(M, N, C)``: position ``n`` of mixed sample ``m`` holds
        ``tokens[m * G + owner[m, n], n]``.
    """
    num_mixed, num_patches = owner.shape
    batch, _, channels = tokens.shape
    grouped = tokens.view(num_mixed, batch // num_mixed, num_patches,
                          channels)
    index = owner[:, None, :, None].expand(-1, 1, -1, channels)
    return grouped.gather(1, index).squeeze(1)


def mix_images(images: Tensor, owner: Tensor, patch_size: int) -> Tensor:
    """Mix images at patch granularity, before the patch embedding.

    Equivalent to ``mix_tokens(patch_embed(images), owner)`` for a patch
    embedding whose kernel equals its stride, but embeds ``M`` images instead
    of ``B``.

    Args:
        images: ``(B, C, H, W)``; ``H`` and ``W`` multiples of ``patch_size``.
        owner: ``(M, N)`` with ``N = (H / p) * (W / p)`` in row-major order.

    Returns:
        ``(M, C, H, W)`` mixed images.
    """
    batch, channels, height, width = images.shape
    num_mixed = owner.shape[0]
    grid_h, grid_w = height // patch_size, width // patch_size
    if grid_h * grid_w != owner.shape[1]:
        raise ValueError(f'owner has {owner.shape[1]} positions but a '
                         f'{height}x{width} image with patch size '
                         f'{patch_size} has {grid_h * grid_w} patches')
    owner_px = owner.view(num_mixed, 1, 1, grid_h, 1, grid_w, 1).expand(
        -1, 1, channels, -1, patch_size, -1, patch_size)
    grouped = images.view(num_mixed, batch // num_mixed, channels, grid_h,
                          patch_size, grid_w, patch_size)
    return grouped.gather(1, owner_px).view(num_mixed, channels, height,
                                            width)


def unmix_tokens(mixed: Tensor, owner: Tensor, mask_token: Tensor,
                 group_size: int) -> Tensor:
    """Give every source image its own sequence back.

    Image ``g`` of group ``m`` sees its own encoded tokens at the positions
    it owns and ``mask_token`` everywhere else.

    Args:
        mixed: ``(M, N, C)`` encoded patch tokens of the mixed samples
            (no cls token).
        owner: ``(M, N)``.
        mask_token: ``(C,)`` or anything broadcastable to ``(M, G, N, C)``.
        group_size: ``G``.

    Returns:
        ``(B, N, C)`` with ``B = M * G``.
    """
    num_mixed, num_patches, channels = mixed.shape
    slots = torch.arange(group_size, device=owner.device)
    is_own = (owner[:, None, :] == slots[None, :, None]).unsqueeze(-1)
    unmixed = torch.where(is_own, mixed.unsqueeze(1), mask_token)
    return unmixed.reshape(num_mixed * group_size, num_patches, channels)


def reconstruction_mask(owner: Tensor, group_size: int) -> Tensor:
    """Which positions each source image must reconstruct.

    Args:
        owner: ``(M, N)``.

    Returns:
        ``(B, N)`` float, 1 where image ``b`` does *not* own the position
        (as MAE's mask: 1 = to predict, 0 = visible).
    """
    slots = torch.arange(group_size, device=owner.device)
    not_own = owner[:, None, :] != slots[None, :, None]
    return not_own.flatten(0, 1).float()


def homologous_target(owner: Tensor) -> Tensor:
    """``(M, N, N)`` bool, True where two positions come from one image."""
    return owner[:, :, None] == owner[:, None, :]


# --------------------------------------------------------------------------
# MAE masking (the ``mixing=False`` ablation)
# --------------------------------------------------------------------------
def random_masking(batch_size: int,
                   num_patches: int,
                   mask_ratio: float,
                   device=None) -> Tuple[Tensor, Tensor, Tensor]:
    """MAE's per-sample random masking, as index tensors.

    Draws the same random numbers as mmpretrain's ``MAEViT.random_masking``
    so that, under one seed, both pick the same patches.

    Returns:
        ids_keep: ``(B, N_keep)`` kept positions, in shuffled order.
        mask: ``(B, N)`` float, 1 = masked (to predict).
        ids_restore: ``(B, N)`` inverse permutation of the shuffle.
    """
    len_keep = int(num_patches * (1 - mask_ratio))
    noise = torch.rand(batch_size, num_patches, device=device)
    ids_shuffle = noise.argsort(dim=1)
    ids_restore = ids_shuffle.argsort(dim=1)
    mask = (ids_restore >= len_keep).float()
    return ids_shuffle[:, :len_keep], mask, ids_restore


# --------------------------------------------------------------------------
# Homologous attention
# --------------------------------------------------------------------------
class TopKAttention(NamedTuple):
    """Result of :func:`topk_attention`.

    out: ``(M, h, L, d)`` attention output.
    topk_indices: ``(M, h, N, K)`` long, the patch keys (0-based patch
        positions, cls excluded) each patch query selected.
    """
    out: Tensor
    topk_indices: Tensor


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


def select_topk_keys(q: Tensor, k: Tensor, top_k: int,
                     num_prefix_tokens: int = 1) -> Tensor:
    """Each patch query's ``top_k`` patch keys, chosen without gradient from
    :func:`attention_scores_fp32`.

    Args:
        q, k: ``(M, h, L, d)``, prefix (cls) tokens first.

    Returns:
        ``(M, h, N, top_k)`` long patch positions (0-based, prefix
        excluded).
    """
    p = num_prefix_tokens
    return topk_select(attention_scores_fp32(q, k)[..., p:, p:], top_k)


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
    return cpu_kernels is not None and cpu_kernels.available()


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
    (:mod:`mixedae_mm.cpu_kernels`) where it builds, PyTorch ops otherwise.
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

    - on the CPU (no dropout), ``_SparseTopKAttention`` reuses the
      selection's scores and keeps only the probabilities of the selected
      keys for backward, no ``(L, L)`` tensor; selection and softmax are a
      C kernel (:mod:`mixedae_mm.cpu_kernels`) where one can be built;
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
        out, topk_indices = _SparseTopKAttention.apply(q, k, v, top_k,
                                                       num_prefix_tokens)
        return TopKAttention(out, topk_indices)
    topk_indices = select_topk_keys(q, k, top_k, num_prefix_tokens)
    keep = topk_keep_mask(topk_indices, q.shape[-2], num_prefix_tokens)
    out = F.scaled_dot_product_attention(
        q, k, v, attn_mask=keep, dropout_p=dropout_p)
    return TopKAttention(out, topk_indices)


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


# --------------------------------------------------------------------------
# Homologous contrastive loss
# --------------------------------------------------------------------------
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
        return _homologous_contrastive_loss_fp32(features.float(), owner,
                                                 temperature)


def _homologous_contrastive_loss_fp32(features: Tensor, owner: Tensor,
                                      temperature: float) -> Tensor:
    z = F.normalize(features, dim=-1)
    logits = z @ z.transpose(1, 2) / temperature
    num_patches = owner.shape[1]
    self_mask = torch.eye(num_patches, dtype=torch.bool, device=z.device)
    logits = logits.masked_fill(self_mask, float('-inf'))
    log_prob = logits.log_softmax(dim=-1)
    positives = homologous_target(owner) & ~self_mask
    # -inf * 0 on the diagonal would be NaN: zero it before the weighted sum.
    log_prob = log_prob.masked_fill(self_mask, 0.0)
    pos_log_prob = (log_prob * positives).sum(-1) / positives.sum(-1).clamp(
        min=1)
    return -pos_log_prob.mean()


# --------------------------------------------------------------------------
# Reconstructions in pixel space (visualisation)
# --------------------------------------------------------------------------
# Patches are ``(B, N, P)`` with ``P = p * p * C`` in the layout of
# mmpretrain's ``MAEPretrainHead.patchify`` (which this package reuses for
# patchify/unpatchify rather than keeping a second copy).
PIXEL_STATS_CHOICES = ('target', 'visible')


def patch_statistics(
        patches: Tensor,
        visible: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
    """Mean and variance that undo a per-patch (``norm_pix``) normalisation.

    Args:
        patches: ``(B, N, P)`` patches of the true images.
        visible: ``(B, N)`` bool. ``None``: every patch's own mean/var (what
            the loss normalised the target with; hidden patches then borrow
            their true brightness and contrast). Given: one mean/var per
            image, the average of the per-patch mean/var over the image's
            *visible* patches, for every position (nothing hidden leaks).

    Returns:
        ``mean, var``, each ``(B, N, 1)``.
    """
    mean = patches.mean(dim=-1, keepdim=True)
    var = patches.var(dim=-1, keepdim=True)
    if visible is None:
        return mean, var
    weight = visible.to(patches.dtype).unsqueeze(-1)
    count = weight.sum(dim=1, keepdim=True)
    if bool((count == 0).any()):
        raise ValueError('an image has no visible patch to take pixel '
                         "statistics from; use pixel_stats='target'")
    pooled = [(s * weight).sum(dim=1, keepdim=True) / count
              for s in (mean, var)]
    return tuple(p.expand_as(mean) for p in pooled)


def denormalize_patches(pred: Tensor, mean: Tensor, var: Tensor,
                        eps: float = 1e-6) -> Tensor:
    """Inverse of ``norm_pix``: ``pred * sqrt(var + eps) + mean``.

    Args:
        pred: ``(B, N, P)`` in per-patch normalised units.
        mean, var: broadcastable to ``pred`` (``(B, N, 1)`` from
            :func:`patch_statistics`); ``eps`` as in the loss' target.

    Returns:
        ``(B, N, P)`` in the units of the patches the statistics came from.
    """
    return pred * (var + eps).sqrt() + mean


def paste_visible(reconstruction: Tensor, patches: Tensor,
                  visible: Tensor) -> Tensor:
    """The true patches where visible, the reconstruction elsewhere.

    Args:
        reconstruction, patches: ``(B, N, P)``.
        visible: ``(B, N)`` bool.

    Returns:
        ``(B, N, P)``.
    """
    return torch.where(visible.unsqueeze(-1), patches, reconstruction)


def to_pixels(images: Tensor, mean: Tensor, std: Tensor) -> Tensor:
    """Undo the data preprocessor's ``(x - mean) / std``, clamped to 0..255.

    Args:
        images: ``(B, C, H, W)`` normalised images.
        mean, std: ``(C,)`` or ``(C, 1, 1)`` in 0..255 units.

    Returns:
        ``(B, C, H, W)`` float pixel values in ``[0, 255]``.
    """
    channels = images.shape[1]
    mean, std = (t.reshape(1, channels, 1, 1).to(images) for t in (mean, std))
    return (images * std + mean).clamp(0, 255)


def patch_mask_to_pixels(mask: Tensor, grid_hw: Tuple[int, int],
                         patch_size: int) -> Tensor:
    """Blow a per-patch mask up to pixels.

    Args:
        mask: ``(B, N)`` with ``N = grid_h * grid_w`` in row-major order.

    Returns:
        ``(B, 1, grid_h * p, grid_w * p)`` of ``mask``'s dtype.
    """
    grid_h, grid_w = grid_hw
    if grid_h * grid_w != mask.shape[1]:
        raise ValueError(f'mask has {mask.shape[1]} positions, the grid '
                         f'{grid_h}x{grid_w} has {grid_h * grid_w}')
    grid = mask.reshape(mask.shape[0], 1, grid_h, grid_w)
    return grid.repeat_interleave(patch_size, dim=2).repeat_interleave(
        patch_size, dim=3)


def topk_key_frequency(topk_indices: Tensor, num_patches: int) -> Tensor:
    """How many heads picked each key, as a fraction of the heads.

    Args:
        topk_indices: ``(M, h, N, K)`` from homologous attention.
        num_patches: ``N``.

    Returns:
        ``(M, N, N)`` float in ``[0, 1]``: ``[m, i, j]`` is the fraction of
        heads whose query ``i`` selected key ``j``.
    """
    picked = topk_indices.new_zeros(*topk_indices.shape[:-1], num_patches,
                                    dtype=torch.float32)
    picked.scatter_(-1, topk_indices, 1.)
    return picked.mean(dim=1)
