"""COCO detection (mmdet Mask R-CNN + SimpleFPN) from a MixedAE pretraining
checkpoint: the real config, tiny overrides, a real COCO-format dataset."""
import json
import os
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import DefaultScope
from PIL import Image, ImageDraw

from transfer_utils import (assert_backbone_equals_pretrained,
                             assert_cpu_fp32_and_scaled_lr, build_model,
                             evaluate, train)

pytest.importorskip('mmdet')

LONG = 'configs/det/mixedae_vitb_mask-rcnn_simplefpn-lsj-100e_coco.py'
SHORT = 'configs/det/mixedae_vitb_mask-rcnn_simplefpn-lsj-1x_coco.py'
CLASSES = ('square', 'triangle')


def _shape(kind, x, y, size):
    """A polygon (flat COCO list) of a square or a triangle at ``(x, y)``."""
    if kind == 'square':
        return [x, y, x + size, y, x + size, y + size, x, y + size]
    return [x + size / 2, y, x + size, y + size, x, y + size]


def _polygon_area(flat):
    xs, ys = flat[0::2], flat[1::2]
    return abs(sum(xs[i] * ys[i - 1] - xs[i - 1] * ys[i]
                   for i in range(len(xs)))) / 2


def tiny_coco(root, num_train=2, num_val=2):
    """COCO's layout: ``<split>/*.jpg`` + ``annotations/instances_<split>.
    json`` with polygon masks; 1-3 red squares / blue triangles per image on
    a noisy grey background, images of 96-128 pixels."""
    gen = torch.Generator().manual_seed(0)
    os.makedirs(osp.join(root, 'annotations'))
    categories = [dict(id=i + 1, name=n, supercategory='shape')
                  for i, n in enumerate(CLASSES)]
    colours = {'square': (220, 40, 40), 'triangle': (40, 60, 220)}
    ann_id = 0
    for split, count in (('train', num_train), ('val', num_val)):
        os.makedirs(osp.join(root, split))
        images, annotations = [], []
        for i in range(count):
            w, h = 128 - 16 * (i % 3), 96 + 16 * (i % 3)
            noise = torch.randint(90, 150, (h, w, 3), generator=gen)
            img = Image.fromarray(noise.to(torch.uint8).numpy())
            draw = ImageDraw.Draw(img)
            image_id = len(images) + 1
            for j in range(1 + i % 3):
                kind = CLASSES[(i + j) % 2]
                size = 20 + 4 * j  # side by side, inside even 96 px
                x, y = 4 + 30 * j, 8 + 12 * j
                poly = _shape(kind, float(x), float(y), float(size))
                draw.polygon(poly, fill=colours[kind])
                ann_id += 1
                annotations.append(
                    dict(id=ann_id, image_id=image_id,
                         category_id=CLASSES.index(kind) + 1,
                         segmentation=[poly], area=_polygon_area(poly),
                         bbox=[x, y, size, size], iscrowd=0))
            name = f'{split}_{i:04d}.jpg'
            img.save(osp.join(root, split, name), quality=95)
            images.append(dict(id=image_id, file_name=name, width=w,
                               height=h))
        with open(osp.join(root, 'annotations',
                           f'instances_{split}.json'), 'w') as f:
            json.dump(dict(images=images, annotations=annotations,
                           categories=categories), f)
    return root


def tiny_overrides(checkpoint, data_root, image=128):
    """Shrink the ViT-B recipe: the demo encoder (192 dims, 6 blocks,
    patch 8), 4x4 windows with blocks 2 and 5 global (ViT-B: every third
    block), a stride-8 map whose pyramid keeps strides 4-32, 2 classes."""
    data_root = str(data_root)
    overrides = {
        'model.backbone.arch': 'demo-tiny',
        'model.backbone.img_size': 64,
        'model.backbone.patch_size': 8,
        'model.backbone.window_size': 4,
        'model.backbone.global_attn_indexes': [2, 5],
        'model.backbone.out_indices': (5, ),
        'model.backbone.init_cfg.checkpoint': checkpoint,
        'model.neck.in_channels': 192,
        'model.neck.scale_factors': (2.0, 1.0, 0.5, 0.25),
        'model.roi_head.bbox_head.num_classes': len(CLASSES),
        'model.roi_head.mask_head.num_classes': len(CLASSES),
        'model.data_preprocessor.pad_size_divisor': image,  # 1024 -> 128
        # fewer proposals and RoIs: a CPU test, not a recipe
        'model.train_cfg.rpn_proposal.max_per_img': 200,
        'model.train_cfg.rcnn.sampler.num': 64,
        'model.test_cfg.rpn.max_per_img': 100,
        'train_dataloader.batch_size': 2,
        'train_dataloader.num_workers': 0,
        'train_dataloader.persistent_workers': False,
        'train_dataloader.dataset.times': 1,
        'train_dataloader.dataset.dataset.data_root': data_root,
        'train_dataloader.dataset.dataset.ann_file':
        'annotations/instances_train.json',
        'train_dataloader.dataset.dataset.data_prefix.img': 'train/',
        'train_dataloader.dataset.dataset.metainfo.classes': CLASSES,
        'train_dataloader.dataset.dataset.pipeline.2.scale': (image, image),
        'train_dataloader.dataset.dataset.pipeline.3.crop_size':
        (image, image),
        'train_cfg.max_epochs': 1,
        'train_cfg.val_interval': 1,
        'default_hooks.logger.interval': 1,
        'default_hooks.checkpoint.interval': 1,
        'randomness.seed': 0,
    }
    for loader in ('val', 'test'):
        prefix = f'{loader}_dataloader.'
        overrides.update({
            prefix + 'num_workers': 0,
            prefix + 'persistent_workers': False,
            prefix + 'dataset.data_root': data_root,
            prefix + 'dataset.ann_file': 'annotations/instances_val.json',
            prefix + 'dataset.data_prefix.img': 'val/',
            prefix + 'dataset.metainfo.classes': CLASSES,
            prefix + 'dataset.pipeline.1.scale': (image, image),
        })
        overrides[f'{loader}_evaluator.ann_file'] = osp.join(
            data_root, 'annotations', 'instances_val.json')
    return overrides


def build_in_mmdet(cfg):
    """Build one module in mmdet's scope, leaving the global scope as is."""
    import mixedae_mm.downstream.mmdet  # noqa: F401
    from mmdet.registry import MODELS
    with DefaultScope.overwrite_default_scope('mmdet'):
        return MODELS.build(cfg)


def test_simple_fpn_shapes_and_ln2d():
    norm = build_in_mmdet(dict(type='LN2d', num_channels=8))
    x = torch.randn(2, 8, 5, 3)
    expected = torch.nn.functional.layer_norm(
        x.permute(0, 2, 3, 1), (8, ), eps=1e-6).permute(0, 3, 1, 2)
    torch.testing.assert_close(norm(x), expected)

    fpn = build_in_mmdet(dict(type='SimpleFPN', in_channels=32,
                              out_channels=16))
    fpn.init_weights()
    # patch 16: a 1024 x 768 image gives a 64 x 48 map
    outs = fpn((torch.randn(1, 32, 64, 48), ))
    assert [tuple(o.shape[-2:]) for o in outs] == [
        (256, 192), (128, 96), (64, 48), (32, 24), (16, 12)]
    assert all(o.shape[:2] == (1, 16) for o in outs)
    with pytest.raises(ValueError, match='powers of 2'):
        build_in_mmdet(dict(type='SimpleFPN', in_channels=32,
                            out_channels=16, scale_factors=(3.0, 1.0)))


def test_roi_features_of_the_pyramid_are_those_of_its_maps():
    """mmcv's RoIAlign reads its input's raw buffer as NCHW: the pyramid's
    maps must be laid out so, or Mask R-CNN's heads get scrambled RoI
    features and never learn (box AP 1.2 in the dense study before the
    fix). torchvision's roi_align, which respects strides, is the
    reference."""
    import torchvision
    from mmcv.ops import RoIAlign
    fpn = build_in_mmdet(dict(type='SimpleFPN', in_channels=32,
                              out_channels=16,
                              norm_cfg=dict(type='LN2d', eps=1e-6)))
    fpn.init_weights()
    torch.manual_seed(0)
    rois = torch.tensor([[0, 2., 3., 40., 30.], [1, 10., 5., 60., 61.]])
    for stride, level in zip((4, 8, 16, 32, 64),
                             fpn((torch.randn(2, 32, 16, 16), ))):
        ours = RoIAlign((7, 7), 1 / stride, 0, aligned=True)(level, rois)
        reference = torchvision.ops.roi_align(level, rois, (7, 7),
                                              1 / stride, 0, True)
        torch.testing.assert_close(ours, reference)


@pytest.mark.parametrize('config', [LONG, SHORT])
def test_configs_load(repo_root, config):
    cfg = Config.fromfile(osp.join(repo_root, config))
    assert cfg.model.backbone.type == 'MixedAEViT'
    assert cfg.model.neck.type == 'SimpleFPN'
    assert cfg.optim_wrapper.paramwise_cfg.layer_decay_rate == 0.7
    assert cfg.optim_wrapper.optimizer.lr == 1e-4
    assert cfg.auto_scale_lr.base_batch_size == 64
    # square 1024 inputs come from the data preprocessor: a Pad in the test
    # pipeline would make img_shape the padded canvas, and boxes would be
    # clipped to it instead of to the image
    assert cfg.model.data_preprocessor.pad_size_divisor == 1024
    assert not any(t['type'] == 'Pad'
                   for t in cfg.test_dataloader.dataset.pipeline)
    coco_epochs = (cfg.train_cfg.max_epochs *
                   cfg.train_dataloader.dataset.times)
    assert coco_epochs == (100 if config == LONG else 12)


def test_detector_loads_every_pretrained_tensor(repo_root,
                                                pretrained_checkpoint,
                                                tmp_path):
    model = build_model(
        osp.join(repo_root, LONG),
        tiny_overrides(pretrained_checkpoint, tmp_path))
    assert_backbone_equals_pretrained(model.backbone, pretrained_checkpoint)
    assert model.backbone.window_sizes == [4, 4, 0, 4, 4, 0]
    # the tiny detector runs and its pyramid has the RPN's strides
    model.eval()
    with torch.no_grad():
        feats = model.extract_feat(torch.randn(1, 3, 128, 96))
    assert [tuple(f.shape) for f in feats] == [
        (1, 256, 128 // s, 96 // s) for s in (4, 8, 16, 32)] + [
            (1, 256, 2, 2)]


@pytest.mark.slow
def test_train_validate_and_test(repo_root, pretrained_checkpoint,
                                 tmp_path):
    data = tiny_coco(str(tmp_path / 'coco'))
    overrides = tiny_overrides(pretrained_checkpoint, data)
    log = train(repo_root, LONG, tmp_path / 'work', overrides)
    assert 'Epoch(train) [1][1/1]' in log
    assert_cpu_fp32_and_scaled_lr(log, 1e-4, 2, 64)
    assert 'coco/bbox_mAP:' in log and 'coco/segm_mAP:' in log
    # the metrics line, for whoever reads the test output (pytest -s)
    print(next(line for line in reversed(log.splitlines())
               if 'coco/bbox_mAP:' in line))
    # the saved checkpoint evaluates with tools/test.py (weights-only load)
    log = evaluate(repo_root, LONG, tmp_path / 'work', overrides)
    assert 'coco/bbox_mAP:' in log and 'coco/segm_mAP:' in log
