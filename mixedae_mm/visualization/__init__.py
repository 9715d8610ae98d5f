"""Pictures of what a MixedAE model reconstructs.

Shared by ``tools/visualization/vis_reconstruction.py`` and
:class:`mixedae_mm.engine.ReconstructionVisualizationHook`: load images the
way the model's config says, run :func:`reconstruct` and lay the
result out as one labelled RGB picture per mixed group (row names, source
images, per-panel numbers drawn in the image with PIL, so a picture reads
without the docs).

This file holds the two pictures (reconstruction, homologous attention);
``reconstruction.py`` what the model reconstructs (:func:`reconstruct`,
:func:`seeded_rng`), ``inputs.py`` turns images into model inputs, ``layout.py`` draws labelled
grids, ``pixels.py`` holds the pixel-space helpers, ``curves.py`` the
training curves of ``tools/analysis_tools/plot_log.py``.
"""
from typing import List, Optional, Sequence

import numpy as np
from torch import Tensor

from .. import ops
from ..utils import eval_mode
from . import pixels
from .inputs import (channels_are_rgb, image_name, load_inputs,
                     pad_to_groups, spread_image_paths, test_pipeline_of)
from .layout import (GAP, LABEL_FONT_SIZE, PAD, Picture, compose, label_font,
                     text_size)
from .reconstruction import (Reconstruction, can_reconstruct, reconstruct,
                             seeded_rng)

__all__ = [
    'GAP', 'LABEL_FONT_SIZE', 'PAD', 'Picture', 'ROW_LABELS', 'ROW_NAMES',
    'Reconstruction', 'SLOT_COLOURS', 'can_reconstruct', 'cell_scale',
    'channels_are_rgb', 'compose', 'homologous_attention_grids',
    'image_name', 'label_font', 'load_inputs', 'pad_to_groups',
    'reconstruct', 'reconstruction_grids', 'render', 'seeded_rng',
    'spread_image_paths', 'test_pipeline_of'
]

#: one colour per group slot (RGB), repeated beyond 6
SLOT_COLOURS = np.array([(230, 25, 75), (60, 180, 75), (0, 130, 200),
                         (255, 225, 25), (145, 30, 180), (245, 130, 48)],
                        dtype=np.float32)
ROW_NAMES = ('original', 'model input', 'visible', 'reconstruction',
             'reconstruction + visible')
#: what each row of the reconstruction picture shows, as drawn at its left
ROW_LABELS = {
    'original': 'original',
    'model input': 'model input\n(the mix; other\nimages tinted)',
    'visible': 'visible patches',
    'reconstruction': 'reconstruction',
    'reconstruction + visible': 'reconstruction\n+ visible pasted',
}
def _to_rgb_uint8(images: Tensor, channels_are_rgb: bool) -> np.ndarray:
    """``(B, C, H, W)`` 0..255 float -> ``(B, H, W, 3)`` uint8 RGB."""
    array = images.detach().float().cpu().round().clamp(0, 255).byte()
    array = array.permute(0, 2, 3, 1).numpy()
    return array if channels_are_rgb else array[..., ::-1]


def reconstruction_grids(rec, group_size: int, patch_size: int,
                         channels_are_rgb: bool = True,
                         scale: int = 1,
                         image_names: Optional[Sequence[str]] = None
                         ) -> List[Picture]:
    """One labelled picture per group of ``group_size``.

    Rows (``ROW_NAMES``, named at the left by ``ROW_LABELS``): the
    originals; the model input (the mixed image, each position tinted with
    its source's colour except the column's own patches; MAE: the masked
    image); each image's visible patches (grey elsewhere); the
    reconstruction; the reconstruction with the visible patches pasted back.
    Columns are the images of the group, headed by their name and a strip in
    the slot's colour.

    Args:
        rec: a :class:`Reconstruction` (:func:`reconstruct`).
        group_size: images per grid (the model's ``G``; 4 for MAE too).
        scale: integer upscaling of every cell (nearest).
        image_names: one name per image of ``rec`` (e.g. file names);
            default ``image 1``, ``image 2``, ...
    """
    batch, _, height, width = rec.original.shape
    if batch % group_size:
        raise ValueError(f'{batch} images do not make groups of '
                         f'{group_size}')
    if image_names is None:
        image_names = [f'image {i % group_size + 1}' for i in range(batch)]
    if len(image_names) != batch:
        raise ValueError(f'{len(image_names)} image names for {batch} '
                         'images')
    grid_hw = (height // patch_size, width // patch_size)
    visible_px = pixels.patch_mask_to_pixels(rec.visible, grid_hw,
                                             patch_size).cpu().numpy()
    visible_px = visible_px.transpose(0, 2, 3, 1).astype(bool)  # B H W 1
    rows = {name: _to_rgb_uint8(images, channels_are_rgb).astype(np.float32)
            for name, images in (('original', rec.original),
                                 ('model input', rec.model_input),
                                 ('reconstruction', rec.reconstruction),
                                 ('reconstruction + visible', rec.pasted))}
    rows['visible'] = np.where(visible_px, rows['original'], 128.)
    if rec.owner is not None:
        owner_px = pixels.patch_mask_to_pixels(rec.owner, grid_hw, patch_size)
        owner_px = owner_px.cpu().numpy()[:, 0]  # M H W
        tint = SLOT_COLOURS[owner_px % len(SLOT_COLOURS)]
        owner_px = owner_px.repeat(group_size, axis=0)[..., None]
        slot = (np.arange(batch) % group_size)[:, None, None, None]
        tinted = 0.6 * rows['model input'] + 0.4 * tint.repeat(
            group_size, axis=0)
        rows['model input'] = np.where(owner_px == slot, rows['model input'],
                                       tinted)

    def cell(name, index):
        image = rows[name][index].round().astype(np.uint8)
        if scale > 1:
            image = image.repeat(scale, axis=0).repeat(scale, axis=1)
        return image

    pictures = []
    for first in range(0, batch, group_size):
        columns = range(first, first + group_size)
        pictures.append(compose(
            [[cell(name, i) for i in columns] for name in ROW_NAMES],
            row_labels=[ROW_LABELS[name] for name in ROW_NAMES],
            column_labels=[image_names[i] for i in columns],
            column_colours=SLOT_COLOURS))
    return pictures


def cell_scale(inputs: Tensor) -> int:
    """The integer upscaling that makes a picture cell of ``inputs``
    ``(B, C, H, W)`` at least 128 pixels high."""
    return max(1, -(-128 // inputs.shape[-2]))


def render(model, inputs: Tensor, seed: int = 0, scale: int = 1,
           pixel_stats: str = 'target',
           image_names: Optional[Sequence[str]] = None) -> List[Picture]:
    """:func:`reconstruct` of ``inputs`` as labelled pictures (see
    :func:`reconstruction_grids`); the global random state is untouched."""
    rec = reconstruct(model, inputs, seed=seed, pixel_stats=pixel_stats)
    return reconstruction_grids(rec, model.backbone.group_size,
                                model.backbone.patch_size,
                                channels_are_rgb(model), scale, image_names)


def homologous_attention_grids(model, inputs: Tensor, seed: int = 0,
                               scale: int = 1,
                               image_names: Optional[Sequence[str]] = None):
    """What homologous attention picks, one labelled picture per mixed
    image.

    Rows: the homologous-attention layers, labelled with the layer index
    and its mean homologous share over the queries; columns: one query
    patch per source image (its owned patch nearest the centre, outlined in
    the source's colour), headed by the image's name. A cell is the mixed
    image darkened except at the keys the query selected, brighter the more
    heads picked the key; its caption is the query's homologous share. The
    title says what the numbers mean and their chance level, 1/G.

    Args:
        image_names: one name per image of ``inputs`` (e.g. file names);
            default ``image 1``, ``image 2``, ... within each group.

    Returns:
        ``(pictures, precision)``: a list of :class:`Picture` and
        ``(M, layers, G)`` float, the fraction of each query's picks (over
        heads) that are homologous.
    """
    import torch

    backbone = model.backbone
    if not backbone.mixing or not backbone.homo_attn_layers:
        raise ValueError('the model has no homologous attention to show '
                         '(ablation mae or naive_mixing)')
    with eval_mode(model), torch.no_grad(), seeded_rng(seed, inputs.device):
        encoding = backbone(inputs, mask=True, return_topk=True)
    owner = encoding.owner
    num_mixed, num_patches = owner.shape
    group_size, patch = backbone.group_size, backbone.patch_size
    grid_h, grid_w = backbone.patch_resolution
    # (layers, M, N, N) fraction of heads picking key j for query i
    freq = torch.stack([pixels.topk_key_frequency(t, num_patches)
                        for t in encoding.topk_indices]).cpu()
    owner = owner.cpu()
    rows, cols = torch.meshgrid(torch.arange(grid_h), torch.arange(grid_w),
                                indexing='ij')
    dist = ((rows - (grid_h - 1) / 2)**2 +
            (cols - (grid_w - 1) / 2)**2).flatten().float()
    pre = model.data_preprocessor
    mixed = _to_rgb_uint8(
        pixels.to_pixels(ops.mix_images(inputs, encoding.owner, patch),
                         pre.mean, pre.std), channels_are_rgb(model))
    mixed = mixed.astype(np.float32)
    cell_w = mixed.shape[2] * scale
    layers = freq.shape[0]
    if image_names is None:
        image_names = [f'image {i % group_size + 1}'
                       for i in range(num_mixed * group_size)]
    if len(image_names) != num_mixed * group_size:
        raise ValueError(f'{len(image_names)} image names for '
                         f'{num_mixed * group_size} images')
    caption = '{:.2f} homologous'
    if text_size(caption.format(0), label_font())[0] > cell_w:
        caption = '{:.2f}'  # the title says what the numbers are
    pictures = []
    precision = torch.zeros(num_mixed, layers, group_size)
    for m in range(num_mixed):
        cells = [[None] * group_size for _ in range(layers)]
        for g in range(group_size):
            query = int(torch.where(owner[m] == g, dist, np.inf).argmin())
            colour = SLOT_COLOURS[g % len(SLOT_COLOURS)]
            for layer in range(layers):
                picks = freq[layer, m, query]  # (N,)
                precision[m, layer, g] = (picks * (owner[m] == g)).sum() / \
                    picks.sum()
                weight = pixels.patch_mask_to_pixels(
                    picks[None], (grid_h, grid_w), patch)[0, 0].numpy()
                cell = mixed[m] * (0.2 + 0.8 * weight[..., None])
                y0, x0 = (query // grid_w) * patch, (query % grid_w) * patch
                cell[y0:y0 + patch, x0:x0 + patch][[0, -1]] = colour
                cell[y0:y0 + patch, x0:x0 + patch][:, [0, -1]] = colour
                cell = cell.round().clip(0, 255).astype(np.uint8)
                if scale > 1:
                    cell = cell.repeat(scale, axis=0).repeat(scale, axis=1)
                cells[layer][g] = cell
        shares = precision[m].tolist()  # layers x G
        pictures.append(compose(
            cells,
            row_labels=[
                f'layer {index}\nmean homologous\n{sum(row) / len(row):.2f}'
                for index, row in zip(backbone.homo_attn_layers, shares)],
            column_labels=[f'query in\n{image_names[m * group_size + g]}'
                           for g in range(group_size)],
            column_colours=SLOT_COLOURS,
            captions=[[caption.format(share) for share in row]
                      for row in shares],
            title=(f'mixed image {m + 1}: keys each outlined query picks '
                   '(brighter: more heads)\nunder each cell, homologous: '
                   "share of the picks in the query's own image (chance "
                   f'{1 / group_size:.2f})')))
    return pictures, precision
