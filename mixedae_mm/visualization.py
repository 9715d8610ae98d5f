"""Pictures of what a MixedAE model reconstructs.

Shared by ``tools/visualization/vis_reconstruction.py`` and
:class:`mixedae_mm.engine.ReconstructionVisualizationHook`: load images the
way the model's config says, run :meth:`MixedAE.reconstruct` and lay the
result out as one RGB grid per mixed group.
"""
import copy
from typing import List, Sequence

import numpy as np
from mmengine.dataset import Compose, default_collate
from torch import Tensor

from . import ops

#: one colour per group slot (RGB), repeated beyond 6
SLOT_COLOURS = np.array([(230, 25, 75), (60, 180, 75), (0, 130, 200),
                         (255, 225, 25), (145, 30, 180), (245, 130, 48)],
                        dtype=np.float32)
ROW_NAMES = ('original', 'model input', 'visible', 'reconstruction',
             'reconstruction + visible')
GAP = 2  # white pixels between cells


def test_pipeline_of(cfg) -> list:
    """The pipeline that turns an image file into a model input."""
    pipeline = cfg.get('test_pipeline')
    if not pipeline and 'test_dataloader' in cfg:
        pipeline = cfg.test_dataloader.dataset.get('pipeline')
    if not pipeline:
        raise ValueError(
            'the config has no test_pipeline: add a top-level test_pipeline '
            '(LoadImageFromFile, a resize/crop to the backbone img_size, '
            'PackInputs), as configs/demo/mixedae_vit-tiny-p8_demo.py does')
    return list(pipeline)


def load_inputs(images: Sequence, pipeline: list, model) -> Tensor:
    """``(B, C, H, W)`` model inputs: ``images`` through ``pipeline`` and
    the model's data preprocessor. An image is a file path, or the data
    info of an in-memory dataset (a dict with an ``img`` array, as
    mmpretrain's ``FashionMNIST`` gives)."""
    from mmpretrain.registry import TRANSFORMS
    transform = Compose([TRANSFORMS.build(t) for t in pipeline])
    batch = default_collate([
        transform(dict(img_path=image) if isinstance(image, str) else
                  copy.deepcopy(image)) for image in images])
    return model.data_preprocessor(batch, False)['inputs']


def _to_rgb_uint8(images: Tensor, channels_are_rgb: bool) -> np.ndarray:
    """``(B, C, H, W)`` 0..255 float -> ``(B, H, W, 3)`` uint8 RGB."""
    array = images.detach().float().cpu().round().clamp(0, 255).byte()
    array = array.permute(0, 2, 3, 1).numpy()
    return array if channels_are_rgb else array[..., ::-1]


def reconstruction_grids(rec, group_size: int, patch_size: int,
                         channels_are_rgb: bool = True,
                         scale: int = 1) -> List[np.ndarray]:
    """One ``(H', W', 3)`` uint8 RGB grid per group of ``group_size``.

    Rows (``ROW_NAMES``): the originals; the model input (the mixed image,
    each position tinted with its source's colour except the column's own
    patches; MAE: the masked image); each image's visible patches (grey
    elsewhere); the reconstruction; the reconstruction with the visible
    patches pasted back. Columns are the images of the group; a strip in the
    slot's colour tops each column.

    Args:
        rec: a :class:`mixedae_mm.models.Reconstruction`.
        group_size: images per grid (the model's ``G``; 4 for MAE too).
        scale: integer upscaling of every cell (nearest).
    """
    batch, _, height, width = rec.original.shape
    if batch % group_size:
        raise ValueError(f'{batch} images do not make groups of '
                         f'{group_size}')
    grid_hw = (height // patch_size, width // patch_size)
    visible_px = ops.patch_mask_to_pixels(rec.visible, grid_hw,
                                          patch_size).cpu().numpy()
    visible_px = visible_px.transpose(0, 2, 3, 1).astype(bool)  # B H W 1
    rows = {name: _to_rgb_uint8(images, channels_are_rgb).astype(np.float32)
            for name, images in (('original', rec.original),
                                 ('model input', rec.model_input),
                                 ('reconstruction', rec.reconstruction),
                                 ('reconstruction + visible', rec.pasted))}
    rows['visible'] = np.where(visible_px, rows['original'], 128.)
    if rec.owner is not None:
        owner_px = ops.patch_mask_to_pixels(rec.owner, grid_hw, patch_size)
        owner_px = owner_px.cpu().numpy()[:, 0]  # M H W
        tint = SLOT_COLOURS[owner_px % len(SLOT_COLOURS)]
        owner_px = owner_px.repeat(group_size, axis=0)[..., None]
        slot = (np.arange(batch) % group_size)[:, None, None, None]
        tinted = 0.6 * rows['model input'] + 0.4 * tint.repeat(
            group_size, axis=0)
        rows['model input'] = np.where(owner_px == slot, rows['model input'],
                                       tinted)

    strip = max(2, height // 16)
    cell_h, cell_w = height * scale, width * scale
    grid_h = strip + len(ROW_NAMES) * (cell_h + GAP) + GAP
    grid_w = group_size * (cell_w + GAP) + GAP
    grids = []
    for first in range(0, batch, group_size):
        grid = np.full((grid_h, grid_w, 3), 255, dtype=np.uint8)
        for col in range(group_size):
            x = GAP + col * (cell_w + GAP)
            grid[:strip, x:x + cell_w] = SLOT_COLOURS[col % len(SLOT_COLOURS)]
            for row, name in enumerate(ROW_NAMES):
                cell = rows[name][first + col].round().astype(np.uint8)
                if scale > 1:
                    cell = cell.repeat(scale, axis=0).repeat(scale, axis=1)
                y = strip + GAP + row * (cell_h + GAP)
                grid[y:y + cell_h, x:x + cell_w] = cell
        grids.append(grid)
    return grids


def channels_are_rgb(model) -> bool:
    """Whether the model sees RGB (``to_rgb=True``) or the files' BGR."""
    return bool(getattr(model.data_preprocessor, '_channel_conversion',
                        False))


def cell_scale(inputs: Tensor) -> int:
    """The integer upscaling that makes a picture cell of ``inputs``
    ``(B, C, H, W)`` at least 128 pixels high."""
    return max(1, -(-128 // inputs.shape[-2]))


def render(model, inputs: Tensor, seed: int = 0, scale: int = 1,
           pixel_stats: str = 'target') -> List[np.ndarray]:
    """:meth:`MixedAE.reconstruct` of ``inputs`` as grids (see
    :func:`reconstruction_grids`); the global random state is untouched."""
    rec = model.reconstruct(inputs, seed=seed, pixel_stats=pixel_stats)
    return reconstruction_grids(rec, model.backbone.group_size,
                                model.backbone.patch_size,
                                channels_are_rgb(model), scale)


def spread_image_paths(dataset, count: int) -> list:
    """``min(count, len(dataset))`` images evenly spaced over ``dataset``
    (its first images, in a folder-sorted set, are often crops of one photo
    or one class): their ``img_path``, or for a dataset held in memory
    (``img`` arrays, no files) their data info, which :func:`load_inputs`
    takes alike."""
    count = min(count, len(dataset))
    infos = [dataset.get_data_info(i * len(dataset) // count)
             for i in range(count)]
    return [info['img_path'] if 'img_path' in info else info
            for info in infos]


def pad_to_groups(paths: Sequence[str], group_size: int) -> List[str]:
    """``paths`` repeated cyclically up to a multiple of ``group_size``."""
    paths = list(paths)
    if not paths:
        raise ValueError('no images given')
    missing = -len(paths) % group_size
    return paths + [paths[i % len(paths)] for i in range(missing)]



def homologous_attention_grids(model, inputs: Tensor, seed: int = 0,
                               scale: int = 1):
    """What homologous attention picks, one grid per mixed image.

    Rows: the homologous-attention layers; columns: one query patch per
    source image (its owned patch nearest the centre, outlined in the
    source's colour). A cell is the mixed image darkened except at the keys
    the query selected, brighter the more heads picked the key.

    Returns:
        ``(grids, precision)``: a list of ``(H', W', 3)`` uint8 RGB grids
        and ``(M, layers, G)`` float, the fraction of each query's picks
        (over heads) that are homologous.
    """
    import torch

    from .models.selfsup.mixedae import seeded_rng
    backbone = model.backbone
    if not backbone.mixing or not backbone.homo_attn_layers:
        raise ValueError('the model has no homologous attention to show '
                         '(ablation mae or naive_mixing)')
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), seeded_rng(seed, inputs.device):
            encoding = backbone(inputs, mask=True, return_topk=True)
    finally:
        model.train(was_training)
    owner = encoding.owner
    num_mixed, num_patches = owner.shape
    group_size, patch = backbone.group_size, backbone.patch_size
    grid_h, grid_w = backbone.patch_resolution
    # (layers, M, N, N) fraction of heads picking key j for query i
    freq = torch.stack([ops.topk_key_frequency(t, num_patches)
                        for t in encoding.topk_indices]).cpu()
    owner = owner.cpu()
    rows, cols = torch.meshgrid(torch.arange(grid_h), torch.arange(grid_w),
                                indexing='ij')
    dist = ((rows - (grid_h - 1) / 2)**2 +
            (cols - (grid_w - 1) / 2)**2).flatten().float()
    pre = model.data_preprocessor
    mixed = _to_rgb_uint8(
        ops.to_pixels(ops.mix_images(inputs, encoding.owner, patch),
                      pre.mean, pre.std), channels_are_rgb(model))
    mixed = mixed.astype(np.float32)
    height, width = mixed.shape[1:3]
    cell_h, cell_w = height * scale, width * scale
    layers = freq.shape[0]
    grids = []
    precision = torch.zeros(num_mixed, layers, group_size)
    for m in range(num_mixed):
        grid = np.full((GAP + layers * (cell_h + GAP),
                        GAP + group_size * (cell_w + GAP), 3), 255, np.uint8)
        for g in range(group_size):
            query = int(torch.where(owner[m] == g, dist, np.inf).argmin())
            colour = SLOT_COLOURS[g % len(SLOT_COLOURS)]
            for layer in range(layers):
                picks = freq[layer, m, query]  # (N,)
                precision[m, layer, g] = (picks * (owner[m] == g)).sum() / \
                    picks.sum()
                weight = ops.patch_mask_to_pixels(
                    picks[None], (grid_h, grid_w), patch)[0, 0].numpy()
                cell = mixed[m] * (0.2 + 0.8 * weight[..., None])
                y0, x0 = (query // grid_w) * patch, (query % grid_w) * patch
                cell[y0:y0 + patch, x0:x0 + patch][[0, -1]] = colour
                cell[y0:y0 + patch, x0:x0 + patch][:, [0, -1]] = colour
                cell = cell.round().clip(0, 255).astype(np.uint8)
                if scale > 1:
                    cell = cell.repeat(scale, axis=0).repeat(scale, axis=1)
                y = GAP + layer * (cell_h + GAP)
                x = GAP + g * (cell_w + GAP)
                grid[y:y + cell_h, x:x + cell_w] = cell
        grids.append(grid)
    return grids, precision
