"""The embedded demo dataset: crops of the photographs scikit-image ships.

scikit-image installs a couple of dozen real photographs (astronaut, coffee,
chelsea the cat, a rocket, ...) inside its package; nothing is downloaded.
:func:`build_demo_dataset` cuts reproducible square crops of them into the
flat folder layout mmpretrain's ``CustomDataset`` reads without labels.
"""
import glob
import json
import os
import os.path as osp
from typing import Optional

import numpy as np
from PIL import Image

MIN_SIDE = 128
FORMAT_VERSION = 2


def shipped_photos(min_side: int = MIN_SIDE):
    """Paths of the photographs bundled with scikit-image, sorted by name."""
    import skimage.data
    data_dir = osp.dirname(skimage.data.__file__)
    paths = []
    for path in sorted(glob.glob(osp.join(data_dir, '*.png')) +
                       glob.glob(osp.join(data_dir, '*.jpg'))):
        try:
            with Image.open(path) as img:
                if min(img.size) >= min_side:
                    paths.append(path)
        except OSError:
            continue
    if not paths:
        raise RuntimeError(f'no photographs of at least {min_side}px found '
                           f'in {data_dir}; is scikit-image installed?')
    return paths


def build_demo_dataset(out_dir: str,
                       crops_per_photo: int = 12,
                       crop_size: int = 128,
                       seed: int = 0,
                       force: bool = False) -> str:
    """Write ``out_dir/train/<photo>_<k>.png`` crops; return ``out_dir``.

    Idempotent: an existing dataset built with the same arguments is reused.
    Each crop takes a random square of 40-100% of the photo's short side and
    resizes it to ``crop_size``; the training pipeline crops again.
    """
    spec = dict(
        version=FORMAT_VERSION,
        crops_per_photo=crops_per_photo,
        crop_size=crop_size,
        seed=seed)
    marker = osp.join(out_dir, 'demo_dataset.json')
    if not force and osp.exists(marker):
        with open(marker) as f:
            if json.load(f).get('spec') == spec:
                return out_dir

    train_dir = osp.join(out_dir, 'train')
    os.makedirs(train_dir, exist_ok=True)
    for stale in glob.glob(osp.join(train_dir, '*.png')):
        os.remove(stale)
    rng = np.random.default_rng(seed)
    files = []
    for path in shipped_photos():
        name = osp.splitext(osp.basename(path))[0]
        with Image.open(path) as img:
            img = img.convert('RGB')
            width, height = img.size
            short = min(width, height)
            for k in range(crops_per_photo):
                side = int(short * rng.uniform(0.4, 1.0))
                left = int(rng.integers(0, width - side + 1))
                top = int(rng.integers(0, height - side + 1))
                crop = img.crop((left, top, left + side, top + side)).resize(
                    (crop_size, crop_size), Image.BICUBIC)
                fname = f'{name}_{k:02d}.png'
                # drop the source's ICC profile: some are malformed and make
                # libpng warn on every read
                crop.save(osp.join(train_dir, fname), icc_profile=None)
                files.append(fname)
    with open(marker, 'w') as f:
        json.dump(dict(spec=spec, num_images=len(files)), f, indent=1)
    return out_dir


def main(argv: Optional[list] = None) -> None:
    import argparse
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('out_dir', nargs='?', default='data/demo_photos')
    parser.add_argument('--crops-per-photo', type=int, default=12)
    parser.add_argument('--crop-size', type=int, default=128)
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--force', action='store_true')
    args = parser.parse_args(argv)
    out = build_demo_dataset(args.out_dir, args.crops_per_photo,
                             args.crop_size, args.seed, args.force)
    count = len(glob.glob(osp.join(out, 'train', '*.png')))
    print(f'demo dataset: {count} images in {osp.join(out, "train")}')


if __name__ == '__main__':
    main()
