"""Reconstructions and attention selections in pixel space, for pictures.

Patches are ``(B, N, P)`` with ``P = p * p * C`` in the layout of
mmpretrain's ``MAEPretrainHead.patchify`` (which this package reuses for
patchify/unpatchify rather than keeping a second copy). They need only
torch.
"""
from typing import Optional, Tuple

import torch
from torch import Tensor

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
