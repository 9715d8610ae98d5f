"""Scenes of real objects for the dense study: Fashion-MNIST items pasted
on a canvas, with a per-pixel class map and per-instance masks and boxes.

No segmentation or detection data set with real images can be had offline
here, so the dense study (docs/results.md, "Dense transfer") composes its
own from real photographs of clothing: every scene is a few Fashion-MNIST
items, each scaled and placed at random, a later item hiding what it covers
of an earlier one. Training scenes use the training split's items, test
scenes the test split's, so no test object was seen in training.

The composition is pure numpy, deterministic from a seed;
:func:`write_scene_set` writes the files in the two codebases' own formats
(``tools/dataset_converters/fmnist_scenes.py`` is its command line)::

    ROOT/images/{train,test}/000000.png      RGB (grey in 3 channels)
    ROOT/seg_maps/{train,test}/000000.png    class index per pixel, 0 = bg
    ROOT/annotations/instances_{train,test}.json   COCO, RLE masks
"""
import json
import os
import os.path as osp
from typing import Dict, List, Sequence, Tuple

import numpy as np

#: Fashion-MNIST's ten classes, in label order (index + 1 is the class in a
#: segmentation map and the category id in the COCO file)
ITEM_CLASSES = ('T-shirt/top', 'Trouser', 'Pullover', 'Dress', 'Coat',
                'Sandal', 'Shirt', 'Sneaker', 'Bag', 'Ankle boot')
SEG_CLASSES = ('background', ) + ITEM_CLASSES
#: a colour per class of SEG_CLASSES, for the visualizers
SEG_PALETTE = ((0, 0, 0), (230, 25, 75), (60, 180, 75), (255, 225, 25),
               (0, 130, 200), (245, 130, 48), (145, 30, 180),
               (70, 240, 240), (240, 50, 230), (210, 245, 60),
               (250, 190, 212))
#: an item pixel is foreground from this grey level on (Fashion-MNIST's
#: background is 0; the bilinear resize softens the edges)
FOREGROUND_LEVEL = 20


def resize_item(item: np.ndarray, size: int) -> np.ndarray:
    """``(28, 28)`` uint8 -> ``(size, size)`` uint8, bilinear (PIL)."""
    from PIL import Image
    return np.asarray(Image.fromarray(item).resize((size, size),
                                                   Image.BILINEAR))


def render(canvas_size: int, placed: Sequence[dict]
           ) -> Tuple[np.ndarray, np.ndarray]:
    """Paint ``placed`` items in order (a later one on top).

    Returns the ``(H, W)`` uint8 grey image and the ``(H, W)`` int16 owner
    map: the index into ``placed`` of the item visible at each pixel, -1 on
    the background."""
    image = np.zeros((canvas_size, canvas_size), np.uint8)
    owner = np.full((canvas_size, canvas_size), -1, np.int16)
    for index, item in enumerate(placed):
        y, x = item['y'], item['x']
        pixels = item['pixels']
        size = pixels.shape[0]
        foreground = pixels >= FOREGROUND_LEVEL
        image[y:y + size, x:x + size][foreground] = pixels[foreground]
        owner[y:y + size, x:x + size][foreground] = index
    return image, owner


def compose_scene(items: np.ndarray, labels: np.ndarray,
                  rng: np.random.Generator, canvas_size: int = 64,
                  num_items: Tuple[int, int] = (2, 4),
                  scale: Tuple[float, float] = (0.8, 1.6),
                  min_visible_area: int = 40) -> dict:
    """One scene from a split's ``items`` ``(n, 28, 28)`` uint8 and their
    ``labels`` ``(n,)``.

    Draws ``num_items`` (inclusive range) items, each resized by a factor
    in ``scale`` and placed wholly on the canvas, and paints them in order.
    An item whose visible part is smaller than ``min_visible_area`` pixels
    is removed and the scene painted again without it, so that every pixel
    of the image belongs to an annotated instance or to the background.

    Returns ``dict(image=(H, W) uint8, class_map=(H, W) uint8 (0 = bg,
    label + 1 on items), instances=[dict(label, mask=(H, W) bool,
    bbox=[x, y, w, h]) ...])``, instances bottom to top.
    """
    count = int(rng.integers(num_items[0], num_items[1] + 1))
    placed = []
    for index in rng.choice(len(items), size=count, replace=False):
        size = int(round(28 * rng.uniform(*scale)))
        size = min(size, canvas_size)
        placed.append(dict(
            label=int(labels[index]), pixels=resize_item(items[index], size),
            y=int(rng.integers(0, canvas_size - size + 1)),
            x=int(rng.integers(0, canvas_size - size + 1))))
    while True:
        image, owner = render(canvas_size, placed)
        areas = [int((owner == i).sum()) for i in range(len(placed))]
        hidden = [i for i, area in enumerate(areas) if area < min_visible_area]
        if not hidden:
            break
        # remove the least visible one; removing it may uncover others
        del placed[min(hidden, key=areas.__getitem__)]
    class_map = np.zeros_like(image)
    instances = []
    for index, item in enumerate(placed):
        mask = owner == index
        class_map[mask] = item['label'] + 1
        ys, xs = np.nonzero(mask)
        instances.append(dict(
            label=item['label'], mask=mask,
            bbox=[int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1),
                  int(ys.max() - ys.min() + 1)]))
    return dict(image=image, class_map=class_map, instances=instances)


def split_rng(seed: int, split: str) -> np.random.Generator:
    """Independent streams for the two splits of one seed."""
    return np.random.default_rng([seed, ('train', 'test').index(split)])


def instance_annotation(instance: dict, image_id: int, ann_id: int) -> dict:
    """One COCO annotation: compressed RLE of the visible mask, the tight
    box, the visible area, category = label + 1."""
    from pycocotools import mask as mask_utils
    rle = mask_utils.encode(np.asfortranarray(instance['mask'], np.uint8))
    return dict(id=ann_id, image_id=image_id,
                category_id=instance['label'] + 1,
                segmentation=dict(size=rle['size'],
                                  counts=rle['counts'].decode('ascii')),
                area=int(instance['mask'].sum()), bbox=instance['bbox'],
                iscrowd=0)


def coco_categories() -> List[dict]:
    return [dict(id=i + 1, name=name, supercategory='clothing')
            for i, name in enumerate(ITEM_CLASSES)]


def write_scene_set(root: str, splits: Dict[str, Tuple[np.ndarray,
                                                       np.ndarray, int]],
                    seed: int, **compose_options) -> Dict[str, int]:
    """Compose and write each split: ``splits`` maps ``'train'``/``'test'``
    to ``(items, labels, number of scenes)``; ``compose_options`` go to
    :func:`compose_scene`. Returns ``{split: number of instances}``. The
    files are laid out as the module docstring shows; ``scenes.json``,
    written last, records the settings (and marks the set complete)."""
    import shutil

    from PIL import Image
    instances = {}
    # a half-written or earlier set must not mix with this one
    if osp.isfile(osp.join(root, 'scenes.json')):
        os.remove(osp.join(root, 'scenes.json'))
    for folder in ('images', 'seg_maps', 'annotations'):
        shutil.rmtree(osp.join(root, folder), ignore_errors=True)
    os.makedirs(osp.join(root, 'annotations'), exist_ok=True)
    for split, (items, labels, count) in splits.items():
        rng = split_rng(seed, split)
        for folder in ('images', 'seg_maps'):
            os.makedirs(osp.join(root, folder, split), exist_ok=True)
        images, annotations = [], []
        for image_id in range(1, count + 1):
            scene = compose_scene(items, labels, rng, **compose_options)
            name = f'{image_id - 1:06d}.png'
            Image.fromarray(np.repeat(scene['image'][..., None], 3, -1)).save(
                osp.join(root, 'images', split, name))
            Image.fromarray(scene['class_map']).save(
                osp.join(root, 'seg_maps', split, name))
            height, width = scene['image'].shape
            images.append(dict(id=image_id, file_name=name, width=width,
                               height=height))
            for instance in scene['instances']:
                annotations.append(instance_annotation(
                    instance, image_id, len(annotations) + 1))
        _write_json(osp.join(root, 'annotations', f'instances_{split}.json'),
                    dict(images=images, annotations=annotations,
                         categories=coco_categories()))
        instances[split] = len(annotations)
    _write_json(osp.join(root, 'scenes.json'), dict(
        seed=seed, scenes={split: v[2] for split, v in splits.items()},
        instances=instances, **compose_options))
    return instances


def build_scene_set(data_root: str, root: str, seed: int = 0,
                    num_train: int = 10000, num_test: int = 2000,
                    **compose_options) -> Dict[str, int]:
    """Read Fashion-MNIST from ``data_root`` and write ``num_train``
    training and ``num_test`` test scenes under ``root`` (see
    :func:`write_scene_set`); a missing IDX file raises
    ``FashionMNISTMissingError``, a truncated one ``ValueError``, each
    naming the file."""
    from .fashion_mnist import load_fashion_mnist
    splits = {}
    for split, count in (('train', num_train), ('test', num_test)):
        images, labels = load_fashion_mnist(data_root, split)
        splits[split] = (images.numpy(), labels.numpy(), count)
    return write_scene_set(root, splits, seed, **compose_options)


def _write_json(path: str, content: dict) -> None:
    with open(path + '.tmp', 'w') as f:
        json.dump(content, f)
    os.replace(path + '.tmp', path)
