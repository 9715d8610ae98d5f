"""Pictures of what a MixedAE model reconstructs.

Shared by ``tools/visualization/vis_reconstruction.py`` and
:class:`mixedae_mm.engine.ReconstructionVisualizationHook`: load images the
way the model's config says, run :meth:`MixedAE.reconstruct` and lay the
result out as one RGB grid per mixed group.
"""
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


def load_inputs(paths: Sequence[str], pipeline: list, model) -> Tensor:
    """``(B, C, H, W)`` model inputs: files through ``pipeline`` and the
    model's data preprocessor."""
    from mmpretrain.registry import TRANSFORMS
    transform = Compose([TRANSFORMS.build(t) for t in pipeline])
    batch = default_collate([transform(dict(img_path=p)) for p in paths])
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


def render(model, inputs: Tensor, seed: int = 0, scale: int = 1,
           pixel_stats: str = 'target') -> List[np.ndarray]:
    """:meth:`MixedAE.reconstruct` of ``inputs`` as grids (see
    :func:`reconstruction_grids`); the global random state is untouched."""
    rec = model.reconstruct(inputs, seed=seed, pixel_stats=pixel_stats)
    return reconstruction_grids(rec, model.backbone.group_size, model.backbone.patch_size,
                                channels_are_rgb(model), scale)


def pad_to_groups(paths: Sequence[str], group_size: int) -> List[str]:
    """``paths`` repeated cyclically up to a multiple of ``group_size``."""
    paths = list(paths)
    if not paths:
        raise ValueError('no images given')
    missing = -len(paths) % group_size
    return paths + [paths[i % len(paths)] for i in range(missing)]

