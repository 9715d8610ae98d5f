"""The generated ImageNet folder of the tests and the GPU check."""
import glob
import hashlib
import os.path as osp

import numpy as np
import pytest
from PIL import Image

from mixedae_mm.datasets import make_imagenet_folder


def _digest(root):
    files = sorted(osp.relpath(p, root) for p in
                   glob.glob(osp.join(root, '**', '*.*'), recursive=True))
    h = hashlib.sha256()
    for name in files:
        h.update(name.encode())
        h.update(open(osp.join(root, name), 'rb').read())
    return h.hexdigest()


@pytest.mark.parametrize('style', ['smooth', 'by-class'])
def test_mmpretrain_reads_the_folder_and_it_is_reproducible(tmp_path, style):
    from mmpretrain.datasets import ImageNet
    root = make_imagenet_folder(str(tmp_path / 'a'), classes=3, per_class=2,
                                size=40, splits=('train', 'val'),
                                style=style)
    for split in ('train', 'val'):
        dataset = ImageNet(data_root=root, split=split, pipeline=[])
        assert [dataset.get_data_info(i)['gt_label'] for i in
                range(len(dataset))] == [0, 0, 1, 1, 2, 2]
        assert Image.open(dataset.get_data_info(0)['img_path']).size == (40,
                                                                         40)
    again = make_imagenet_folder(str(tmp_path / 'b'), classes=3, per_class=2,
                                 size=40, splits=('train', 'val'),
                                 style=style)
    assert _digest(root) == _digest(again)


def test_by_class_images_are_told_apart_by_brightness(tmp_path):
    root = make_imagenet_folder(str(tmp_path), classes=2, per_class=3,
                                style='by-class')
    mean = {label: np.mean([np.asarray(Image.open(osp.join(
        root, 'train', f'n{label:08d}', f'n{label:08d}_{i}.JPEG'))).mean()
        for i in range(3)]) for label in (0, 1)}
    assert mean[0] + 60 < mean[1]


def test_an_unknown_style_is_refused(tmp_path):
    with pytest.raises(ValueError, match="style 'noise': choose from"):
        make_imagenet_folder(str(tmp_path), style='noise')
