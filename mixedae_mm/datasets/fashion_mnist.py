"""Fashion-MNIST as Debian ships it, for the small-scale study.

Debian's package ``dataset-fashion-mnist`` installs the four IDX files,
gzip-compressed, under ``/usr/share/datasets/fashion-mnist/``; mmpretrain's
``FashionMNIST`` wants them uncompressed and would otherwise try to download
them. :class:`FashionMNISTFiles` reads either form and never downloads; a
missing file stops with one line naming the package and the setting.
"""
import gzip
import os.path as osp
import zlib
from typing import Dict, List

import numpy as np
import torch
from mmcv.transforms import BaseTransform
from mmpretrain.datasets import FashionMNIST
from mmpretrain.registry import DATASETS, TRANSFORMS

#: where Debian's package puts the files
DEBIAN_FASHION_MNIST = '/usr/share/datasets/fashion-mnist'
SPLIT_FILES = {
    'train': ('train-images-idx3-ubyte', 'train-labels-idx1-ubyte'),
    'test': ('t10k-images-idx3-ubyte', 't10k-labels-idx1-ubyte'),
}


class FashionMNISTMissingError(FileNotFoundError):
    """The IDX files are not where the config or command line says."""


class FashionMNISTDamagedError(ValueError):
    """An IDX file that is cut short or is not an IDX file of bytes."""


#: what to do about a damaged file
_REINSTALL = ('reinstall it (apt-get install --reinstall '
              'dataset-fashion-mnist) or copy it again')


def fashion_mnist_files(root: str) -> Dict[str, str]:
    """``{name: path}`` of the four IDX files in ``root``, each either
    uncompressed or ``.gz``; raises :class:`FashionMNISTMissingError`, one
    line that says how to get them, if any is missing."""
    found, missing = {}, []
    for name in sum(SPLIT_FILES.values(), ()):
        for candidate in (name, name + '.gz'):
            if osp.isfile(osp.join(root, candidate)):
                found[name] = osp.join(root, candidate)
                break
        else:
            missing.append(name)
    if missing:
        raise FashionMNISTMissingError(
            f'Fashion-MNIST not found in {root!r} (missing {missing[0]}[.gz]'
            f'{f" and {len(missing) - 1} more" if len(missing) > 1 else ""}):'
            f' install the Debian package dataset-fashion-mnist (apt-get '
            f'install dataset-fashion-mnist, files in {DEBIAN_FASHION_MNIST})'
            f' or pass --data-root / data_root=DIR holding the four IDX files')
    return found


def read_idx_uint8(path: str) -> np.ndarray:
    """An IDX file of unsigned bytes (``.gz`` or not) as an array of its
    shape (LeCun's format: two zero bytes, type 0x08, the number of
    dimensions, one big-endian int32 per dimension, the data)."""
    try:
        with (gzip.open if path.endswith('.gz') else open)(path, 'rb') as f:
            data = f.read()
    except (EOFError, OSError, zlib.error) as err:
        # gzip names neither the file nor the cause in a way a user reads:
        # 'Compressed file ended before the end-of-stream marker...'
        raise FashionMNISTDamagedError(
            f'{path} is damaged, its gzip stream is cut short or corrupt '
            f'({err}): {_REINSTALL}') from None
    if len(data) < 4 or data[:3] != b'\x00\x00\x08' or \
            len(data) < 4 + 4 * data[3]:
        raise FashionMNISTDamagedError(
            f'{path} is not an IDX file of unsigned bytes: {_REINSTALL}')
    ndim = data[3]
    shape = tuple(np.frombuffer(data, '>i4', ndim, offset=4))
    array = np.frombuffer(data, np.uint8, offset=4 + 4 * ndim)
    if array.size != int(np.prod(shape)):
        raise FashionMNISTDamagedError(
            f'{path} is truncated: {array.size} bytes for shape {shape}: '
            f'{_REINSTALL}')
    return array.reshape(shape).copy()  # writable, as torch wants


def load_fashion_mnist(root: str, split: str):
    """``(images, labels)`` of a split: ``(n, 28, 28)`` uint8 and ``(n,)``
    int64 torch tensors."""
    files = fashion_mnist_files(root)
    images_name, labels_name = SPLIT_FILES[split]
    return (torch.from_numpy(read_idx_uint8(files[images_name])),
            torch.from_numpy(read_idx_uint8(files[labels_name])).long())


@DATASETS.register_module()
class FashionMNISTFiles(FashionMNIST):
    """mmpretrain's ``FashionMNIST`` over the IDX files as they are
    (``.gz`` or not), without downloading. ``test_mode=True`` gives the
    10,000 test images, otherwise the 60,000 training images; each sample
    is ``img`` (28, 28) uint8 and ``gt_label``."""

    def __init__(self, data_root: str = DEBIAN_FASHION_MNIST, **kwargs):
        kwargs.setdefault('download', False)
        super().__init__(data_root=data_root, **kwargs)

    def load_data_list(self) -> List[dict]:
        images, labels = load_fashion_mnist(
            self.data_prefix['root'], 'test' if self.test_mode else 'train')
        return [dict(img=image, gt_label=np.array(label, dtype=np.int64))
                for image, label in zip(images.numpy(), labels.tolist())]


@TRANSFORMS.register_module()
class GreyToRGB(BaseTransform):
    """(H, W) or (H, W, 1) grey ``img`` -> (H, W, 3), the channel repeated:
    the models of this package take 3-channel images."""

    def transform(self, results: dict) -> dict:
        img = results['img']
        if img.ndim == 3 and img.shape[2] == 3:
            return results
        if img.ndim == 3:
            img = img[..., 0]
        results['img'] = np.repeat(img[..., None], 3, axis=2)
        results['img_shape'] = img.shape[:2]
        results.setdefault('ori_shape', img.shape[:2])
        return results
