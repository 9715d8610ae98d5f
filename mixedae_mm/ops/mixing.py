"""Mixing: which image owns each patch of a mixed sample (the ``owner``
partition), mixing and un-mixing, and what the decoder reconstructs; and
MAE's random masking, which the ``ablation='mae'`` model runs instead."""
from typing import Optional, Tuple

import torch
from torch import Tensor


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
