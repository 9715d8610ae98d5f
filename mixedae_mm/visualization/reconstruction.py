"""What a MixedAE model reconstructs, in pixel space: the API the pictures
(:func:`mixedae_mm.visualization.render`, the reconstruction hook, the
study's measurements) are made from, kept out of the model, whose training
step does not need it."""
import contextlib
from typing import NamedTuple, Optional

import torch
from torch import Tensor

from .. import ops
from . import pixels as pixel_space


class Reconstruction(NamedTuple):
    """What :func:`reconstruct` returns, per source image ``b``.

    Images are ``(B, C, H, W)`` float pixels in ``[0, 255]``, in the channel
    order the model sees (RGB with the data preprocessor's ``to_rgb=True``,
    as in every config of this package).

    original: the input image.
    model_input: what the encoder saw of it: the mixed image of its group
        (MixedAE) or the image with its masked patches black (MAE).
    visible: ``(B, N)`` bool, the patches of ``b`` the encoder saw (its own
        patches in the mix, or MAE's unmasked ones).
    owner: ``(M, N)`` group slot of every position of every mixed image
        (``None`` for MAE); image ``b`` is slot ``b % G`` of mix ``b // G``.
    reconstruction: the decoder's prediction at every position.
    pasted: ``reconstruction`` with the visible patches replaced by the
        original ones.
    """
    original: Tensor
    model_input: Tensor
    visible: Tensor
    owner: Optional[Tensor]
    reconstruction: Tensor
    pasted: Tensor


@contextlib.contextmanager
def seeded_rng(seed: Optional[int], device: torch.device):
    """Run the block on torch's global generators seeded with ``seed`` and
    put their previous state back after (``None``: leave them alone)."""
    if seed is None:
        yield
        return
    on_cuda = torch.device(device).type == 'cuda'
    with torch.random.fork_rng(devices=[device] if on_cuda else []):
        torch.random.default_generator.manual_seed(seed)
        if on_cuda:
            torch.cuda.manual_seed(seed)
        yield


def can_reconstruct(model) -> bool:
    """Whether ``model`` is a MixedAE pretraining model (or its MAE
    ablation), which :func:`reconstruct` pictures."""
    from ..models import MixedAE
    return isinstance(model, MixedAE)


@torch.no_grad()
def reconstruct(model, inputs: Tensor, seed: Optional[int] = None,
                pixel_stats: str = 'target') -> Reconstruction:
    """See what a :class:`~mixedae_mm.models.MixedAE` reconstructs, in pixel
    space.

    Args:
        model: a MixedAE (any ablation).
        inputs: ``(B, C, H, W)`` as the data preprocessor outputs them;
            ``B`` a multiple of the group size when mixing.
        seed: Draw the mixing partition (or MAE mask) from this seed,
            leaving the global random state untouched; ``None`` draws
            from (and advances) the global state, as training does.
        pixel_stats: How predictions made in ``norm_pix`` units get
            their brightness and contrast back: ``'target'`` (each
            patch's true mean/var, as MAE's visualisation; hidden
            patches borrow theirs) or ``'visible'`` (one mean/var per
            image from its visible patches: nothing hidden leaks). See
            :func:`pixel_space.patch_statistics`.

    Runs the model in eval mode without gradients and restores the mode
    after.
    """
    if pixel_stats not in pixel_space.PIXEL_STATS_CHOICES:
        raise ValueError(
            f'pixel_stats must be one of '
            f'{pixel_space.PIXEL_STATS_CHOICES}, got {pixel_stats!r}')
    was_training = model.training
    model.eval()
    try:
        with seeded_rng(seed, inputs.device):
            pred, hidden, encoding = model.encode_decode(inputs)
    finally:
        model.train(was_training)

    visible = hidden == 0
    owner = None if encoding is None else encoding.owner
    backbone, head = model.backbone, model.head
    patches = head.patchify(inputs)
    if head.norm_pix:
        mean, var = pixel_space.patch_statistics(
            patches, visible if pixel_stats == 'visible' else None)
        pred = pixel_space.denormalize_patches(pred, mean, var)
    pasted = pixel_space.paste_visible(pred, patches, visible)

    preprocessor = model.data_preprocessor

    def pixels(images: Tensor) -> Tensor:
        return pixel_space.to_pixels(images, preprocessor.mean,
                                     preprocessor.std)

    original = pixels(inputs)
    if owner is not None:
        model_input = pixels(ops.mix_images(
            inputs, owner, backbone.patch_size)).repeat_interleave(
                backbone.group_size, dim=0)
    else:
        model_input = original * pixel_space.patch_mask_to_pixels(
            visible, backbone.patch_resolution,
            backbone.patch_size).to(original)
    return Reconstruction(original, model_input, visible, owner,
                          pixels(head.unpatchify(pred)),
                          pixels(head.unpatchify(pasted)))
