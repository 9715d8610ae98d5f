"""Pictures of what a MixedAE model reconstructs.

Shared by ``tools/visualization/vis_reconstruction.py`` and
:class:`mixedae_mm.engine.ReconstructionVisualizationHook`: load images the
way the model's config says, run :meth:`MixedAE.reconstruct` and lay the
result out as one labelled RGB picture per mixed group (row names, source
images, per-panel numbers drawn in the image with PIL, so a picture reads
without the docs).
"""
import copy
import os.path as osp
from typing import List, NamedTuple, Optional, Sequence, Tuple

import numpy as np
from mmengine.dataset import Compose, default_collate
from torch import Tensor

from .. import ops
from . import pixels

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
GAP = 2  # white pixels between cells
PAD = 4  # white pixels around a label
LABEL_FONT_SIZE = 12


class Picture(NamedTuple):
    """A labelled grid of image cells.

    Attributes:
        image: ``(H, W, 3)`` uint8 RGB.
        labels: every text drawn, with the ``(x, y)`` of its top-left
            corner (``PIL.ImageDraw.text`` coordinates, font
            :func:`label_font`).
        cells: ``(y, x)`` of each cell's top-left pixel, rows x columns.
    """
    image: np.ndarray
    labels: List[Tuple[str, Tuple[int, int]]]
    cells: List[List[Tuple[int, int]]]


def label_font(size: int = LABEL_FONT_SIZE):
    """PIL's built-in font (no font file needed), ``size`` pixels."""
    from PIL import ImageFont
    return ImageFont.load_default(size=size)


def text_size(text: str, font) -> Tuple[int, int]:
    """``(width, height)`` of the box ``ImageDraw.text`` fills from
    ``(0, 0)``."""
    from PIL import Image, ImageDraw
    box = ImageDraw.Draw(Image.new('RGB', (1, 1))).multiline_textbbox(
        (0, 0), text, font=font)
    return box[2], box[3]


def _fit(text: str, width: int, font) -> str:
    """``text`` with each line cut at the left (file names differ at their
    end) until it is at most ``width`` pixels wide."""
    lines = []
    for line in text.split('\n'):
        if text_size(line, font)[0] > width:
            while len(line) > 1 and text_size('...' + line,
                                              font)[0] > width:
                line = line[1:]
            line = '...' + line
        lines.append(line)
    return '\n'.join(lines)


def compose(cells: Sequence[Sequence[np.ndarray]],
            row_labels: Sequence[str],
            column_labels: Sequence[str],
            column_colours: Optional[np.ndarray] = None,
            captions: Optional[Sequence[Sequence[str]]] = None,
            title: Optional[str] = None) -> Picture:
    """Lay equal ``(h, w, 3)`` uint8 cells out as a labelled picture.

    From the top: the title; one label per column (shortened to the cell
    width); a strip in each ``column_colours`` row (RGB); then the rows of
    cells, each with its label at the left and, under each cell, its
    caption.
    """
    from PIL import Image, ImageDraw
    font = label_font()
    num_rows, num_cols = len(cells), len(cells[0])
    cell_h, cell_w = cells[0][0].shape[:2]
    column_labels = [_fit(t, cell_w, font) for t in column_labels]
    if captions is not None:
        captions = [[_fit(t, cell_w, font) for t in row] for row in captions]

    def tallest(texts):
        return max((text_size(t, font)[1] for t in texts), default=0)

    left = max(text_size(t, font)[0] for t in row_labels) + 2 * PAD
    title_h = tallest([title]) + 2 * PAD if title else 0
    header_h = tallest(column_labels) + 2 * PAD
    strip_h = max(2, cell_h // 16) if column_colours is not None else 0
    caption_h = tallest([t for row in captions for t in row]) + PAD \
        if captions is not None else 0
    top = title_h + header_h + strip_h + GAP
    row_h = cell_h + caption_h + GAP
    width = max(left + num_cols * (cell_w + GAP),
                text_size(title, font)[0] + 2 * PAD if title else 0)
    canvas = np.full((top + num_rows * row_h, width, 3), 255, np.uint8)
    origins = [[(top + r * row_h, left + c * (cell_w + GAP))
                for c in range(num_cols)] for r in range(num_rows)]
    for r, row in enumerate(cells):
        for c, cell in enumerate(row):
            y, x = origins[r][c]
            canvas[y:y + cell_h, x:x + cell_w] = cell
    if column_colours is not None:
        for c in range(num_cols):
            x = origins[0][c][1]
            canvas[top - GAP - strip_h:top - GAP, x:x + cell_w] = \
                column_colours[c % len(column_colours)]

    labels = []
    if title:
        labels.append((title, (PAD, PAD)))
    for c, text in enumerate(column_labels):
        labels.append((text, (origins[0][c][1], title_h + PAD)))
    for r, text in enumerate(row_labels):
        text_h = text_size(text, font)[1]
        y = origins[r][0][0] + max(0, (cell_h - text_h) // 2)
        labels.append((text, (PAD, y)))
    if captions is not None:
        for r, row in enumerate(captions):
            for c, text in enumerate(row):
                y, x = origins[r][c]
                labels.append((text, (x, y + cell_h + PAD // 2)))
    image = Image.fromarray(canvas)
    draw = ImageDraw.Draw(image)
    for text, xy in labels:
        draw.multiline_text(xy, text, fill=(0, 0, 0), font=font)
    return Picture(np.asarray(image).copy(), labels, origins)


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
        rec: a :class:`mixedae_mm.models.Reconstruction`.
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


def channels_are_rgb(model) -> bool:
    """Whether the model sees RGB (``to_rgb=True``) or the files' BGR."""
    return bool(getattr(model.data_preprocessor, '_channel_conversion',
                        False))


def cell_scale(inputs: Tensor) -> int:
    """The integer upscaling that makes a picture cell of ``inputs``
    ``(B, C, H, W)`` at least 128 pixels high."""
    return max(1, -(-128 // inputs.shape[-2]))


def render(model, inputs: Tensor, seed: int = 0, scale: int = 1,
           pixel_stats: str = 'target',
           image_names: Optional[Sequence[str]] = None) -> List[Picture]:
    """:meth:`MixedAE.reconstruct` of ``inputs`` as labelled pictures (see
    :func:`reconstruction_grids`); the global random state is untouched."""
    rec = model.reconstruct(inputs, seed=seed, pixel_stats=pixel_stats)
    return reconstruction_grids(rec, model.backbone.group_size,
                                model.backbone.patch_size,
                                channels_are_rgb(model), scale, image_names)


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


def image_name(image) -> str:
    """How a picture labels an image of :func:`spread_image_paths`: its
    file name, or ``image <index>`` for one held in memory."""
    if isinstance(image, str):
        return osp.basename(image)
    return f'image {image.get("sample_idx", "?")}'


def pad_to_groups(paths: Sequence[str], group_size: int) -> List[str]:
    """``paths`` repeated cyclically up to a multiple of ``group_size``."""
    paths = list(paths)
    if not paths:
        raise ValueError('no images given')
    missing = -len(paths) % group_size
    return paths + [paths[i % len(paths)] for i in range(missing)]


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

    from ..models.selfsup.mixedae import seeded_rng
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
