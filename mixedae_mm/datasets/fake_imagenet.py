"""A small generated ImageNet in OpenMMLab's folder layout, for tests and
the GPU check: ``<split>/<wnid>/<wnid>_<i>.JPEG`` and ``meta/<split>.txt``
(``"<wnid>/<wnid>_<i>.JPEG <label>"`` per line), what ``ImageNet``
datasets of mmpretrain read with ``data_root`` alone."""
import os
import os.path as osp
from typing import Sequence

#: the kinds of pixels :func:`make_imagenet_folder` draws
STYLES = ('smooth', 'by-class')


def make_imagenet_folder(root: str, *, classes: int = 2, per_class: int = 4,
                         size: int = 72, splits: Sequence[str] = ('train', ),
                         style: str = 'smooth', seed: int = 0) -> str:
    """Write ``per_class`` images of ``size`` px for each of ``classes``
    classes (wnid ``n0000000<label>``) in every split; returns ``root``.

    ``style``:

    - ``'smooth'``: bicubic upsampling of a random 6x6 colour grid, which
      an autoencoder can learn to reconstruct, unlike pixel noise
      (JPEG quality 90);
    - ``'by-class'``: noise in ``[b, b + 60)`` around a brightness ``b``
      of the class (dark class 0, bright class 1, white from class 2 on):
      learnable, not trivial, for classifiers and kNN (PIL's default JPEG
      quality).

    The same arguments write the same files.
    """
    import numpy as np
    import torch
    from PIL import Image
    if style not in STYLES:
        raise ValueError(f'style {style!r}: choose from {", ".join(STYLES)}')
    generator = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    os.makedirs(osp.join(root, 'meta'), exist_ok=True)
    for split in splits:
        lines = []
        for label in range(classes):
            wnid = f'n{label:08d}'
            os.makedirs(osp.join(root, split, wnid), exist_ok=True)
            for i in range(per_class):
                name = f'{wnid}/{wnid}_{i}.JPEG'
                path = osp.join(root, split, name)
                if style == 'smooth':
                    grid = rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)
                    Image.fromarray(grid).resize(
                        (size, size), Image.BICUBIC).save(path, quality=90)
                else:
                    base = 60 + 120 * label
                    pixels = (torch.randint(0, 60, (size, size, 3),
                                            generator=generator) +
                              base).clamp(0, 255).to(torch.uint8).numpy()
                    Image.fromarray(pixels).save(path)
                lines.append(f'{name} {label}\n')
        with open(osp.join(root, 'meta', f'{split}.txt'), 'w') as f:
            f.writelines(lines)
    return root
