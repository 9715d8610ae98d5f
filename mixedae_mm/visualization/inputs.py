"""The images a picture shows, turned into model inputs the way the
model's config says (its test pipeline and data preprocessor)."""
import copy
import os.path as osp
from typing import List, Sequence

from mmengine.dataset import Compose, default_collate
from torch import Tensor


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
    if any(isinstance(image, str) for image in images) and not str(
            pipeline[0]['type']).endswith('LoadImageFromFile'):
        # a pipeline for in-memory images (the study's) takes files too, as
        # in mmpretrain's inferencers, which read the file themselves
        pipeline = [dict(type='LoadImageFromFile')] + list(pipeline)
    transform = Compose([TRANSFORMS.build(t) for t in pipeline])
    batch = default_collate([
        transform(dict(img_path=image) if isinstance(image, str) else
                  copy.deepcopy(image)) for image in images])
    return model.data_preprocessor(batch, False)['inputs']


def channels_are_rgb(model) -> bool:
    """Whether the model sees RGB (``to_rgb=True``) or the files' BGR."""
    return bool(getattr(model.data_preprocessor, '_channel_conversion',
                        False))


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
