"""Transfer from a MixedAE pretraining checkpoint to the shipped recipes:
ImageNet fine-tuning and linear probing (mmpretrain), ADE20K UperNet
(mmseg) and COCO Mask R-CNN + SimpleFPN (mmdet). Each real config, shrunk
by tiny overrides, loads every pretrained tensor, and trains, validates
and tests through the tools on a tiny data set in its real format."""
import os.path as osp
from typing import Callable, NamedTuple, Optional

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import DefaultScope

from builders import (CLS_FINETUNE, CLS_LINEAR, DET_LONG, DET_SHORT,
                      SEG_CONFIG, cls_overrides, det_overrides, seg_overrides,
                      tiny_ade20k, tiny_coco, tiny_imagenet)
from transfer_utils import (assert_backbone_equals_pretrained,
                            assert_cpu_fp32_and_scaled_lr, build_model,
                            evaluate, train)


def _cls_train_overrides(config):
    overrides = {'train_dataloader.dataset.pipeline.1.scale': 64}
    if config == CLS_FINETUNE:
        overrides.update({
            'val_dataloader.dataset.pipeline.1.scale': 72,
            'val_dataloader.dataset.pipeline.2.crop_size': 64,
            'model.train_cfg.augments.0.alpha': 0.8})
    else:
        overrides.update({
            'val_dataloader.dataset.pipeline.1.scale': 64,
            'val_dataloader.dataset.pipeline.2.crop_size': 64})
    return overrides


def _linear_backbone_is_frozen(model):
    assert not any(p.requires_grad for p in model.backbone.parameters())


def _relative_position_bias_starts_at_zero(model):
    # the transfer additions start neutral: zero relative position bias
    for layer in model.backbone.layers:
        assert not layer.attn.relative_position_bias_table.any()


def _windows_and_pyramid(model):
    assert model.backbone.window_sizes == [4, 4, 0, 4, 4, 0]
    # the tiny detector runs and its pyramid has the RPN's strides
    model.eval()
    with torch.no_grad():
        feats = model.extract_feat(torch.randn(1, 3, 128, 96))
    assert [tuple(f.shape) for f in feats] == [
        (1, 256, 128 // s, 96 // s) for s in (4, 8, 16, 32)] + [
            (1, 256, 2, 2)]


class Task(NamedTuple):
    config: str
    codebase: str  # the OpenMMLab package it needs
    overrides: Callable  # (checkpoint, data_root) -> dict
    make_data: Callable  # (root) -> data_root
    train_overrides: dict  # more, for the tool run
    check_model: Optional[Callable]  # more checks of the built model
    trained: str  # in the training log after its one iteration / epoch
    validated: tuple  # in the training log (validation)
    tested: tuple  # in the log of tools/test.py
    lr_and_batch: tuple  # (recipe lr, batch here, recipe batch)


TASKS = {
    'cls-finetune': Task(
        CLS_FINETUNE, 'mmpretrain',
        lambda ckpt, data: cls_overrides(CLS_FINETUNE, ckpt, data),
        tiny_imagenet, _cls_train_overrides(CLS_FINETUNE), None,
        'Epoch(train) [1][2/2]', ('accuracy/top1:', 'accuracy/top5:'),
        ('accuracy/top1:', ), (2e-3, 4, 1024)),  # AdamW 2e-3 @ 1024
    'cls-linear': Task(
        CLS_LINEAR, 'mmpretrain',
        lambda ckpt, data: cls_overrides(CLS_LINEAR, ckpt, data),
        tiny_imagenet, _cls_train_overrides(CLS_LINEAR),
        _linear_backbone_is_frozen,
        'Epoch(train) [1][2/2]', ('accuracy/top1:', 'accuracy/top5:'),
        ('accuracy/top1:', ), (6.4, 4, 16384)),  # LARS 6.4 @ 16384
    'seg-upernet': Task(
        SEG_CONFIG, 'mmseg', seg_overrides, tiny_ade20k, {},
        _relative_position_bias_starts_at_zero,
        'Iter(train) [1/1]', ('mIoU:', 'aAcc:'), ('mIoU:', 'aAcc:'),
        (1e-4, 2, 16)),
    'det-mask-rcnn': Task(
        DET_LONG, 'mmdet', det_overrides, tiny_coco, {},
        _windows_and_pyramid,
        'Epoch(train) [1][1/1]', ('coco/bbox_mAP:', 'coco/segm_mAP:'),
        ('coco/bbox_mAP:', 'coco/segm_mAP:'), (1e-4, 2, 64)),
}


@pytest.mark.parametrize('task', list(TASKS))
def test_transfer_model_loads_every_pretrained_tensor(
        repo_root, pretrained_checkpoint, task, tmp_path):
    task = TASKS[task]
    pytest.importorskip(task.codebase)
    model = build_model(osp.join(repo_root, task.config),
                        task.overrides(pretrained_checkpoint, str(tmp_path)))
    assert_backbone_equals_pretrained(model.backbone, pretrained_checkpoint)
    if task.check_model is not None:
        task.check_model(model)


@pytest.mark.slow
@pytest.mark.parametrize('task', list(TASKS))
def test_train_validate_and_test(repo_root, pretrained_checkpoint, task,
                                 tmp_path):
    name, task = task, TASKS[task]
    pytest.importorskip(task.codebase)
    data = task.make_data(str(tmp_path / 'data'))
    overrides = dict(task.overrides(pretrained_checkpoint, data),
                     **task.train_overrides)
    log = train(repo_root, task.config, tmp_path / 'work', overrides)
    assert task.trained in log
    assert_cpu_fp32_and_scaled_lr(log, *task.lr_and_batch)
    assert all(metric in log for metric in task.validated), task.validated
    if name == 'det-mask-rcnn':
        # the metrics line, for whoever reads the test output (pytest -s)
        print(next(line for line in reversed(log.splitlines())
                   if 'coco/bbox_mAP:' in line))
    # the saved checkpoint evaluates with tools/test.py (weights-only load)
    log = evaluate(repo_root, task.config, tmp_path / 'work', overrides)
    assert all(metric in log for metric in task.tested), task.tested


# ---------------------------------------------- the recipes and their parts
def test_full_seg_config_matches_the_recipe(repo_root):
    pytest.importorskip('mmseg')
    cfg = Config.fromfile(osp.join(repo_root, SEG_CONFIG))
    backbone = cfg.model.backbone
    assert (backbone.type, backbone.arch, backbone.img_size) == ('MixedAEViT',
                                                                 'b', 512)
    assert backbone.out_indices == [3, 5, 7, 11]
    assert backbone.use_rel_pos_bias and backbone.drop_path_rate == 0.1
    assert not backbone.mixing
    assert cfg.model.neck.rescales == [4, 2, 1, 0.5]
    assert cfg.model.decode_head.type == 'UPerHead'
    assert cfg.model.auxiliary_head.type == 'FCNHead'
    assert cfg.optim_wrapper.optimizer.lr == 1e-4
    assert cfg.optim_wrapper.optimizer.weight_decay == 0.05
    assert cfg.optim_wrapper.paramwise_cfg == dict(layer_decay_rate=0.65)
    warmup, poly = cfg.param_scheduler
    assert (warmup.type, warmup.end) == ('LinearLR', 1500)
    assert (poly.type, poly.end) == ('PolyLR', 160000)
    assert cfg.train_cfg.max_iters == 160000
    assert cfg.train_dataloader.batch_size * 8 == 16
    assert cfg.model.test_cfg.mode == 'slide'
    dataset = cfg.train_dataloader.dataset
    assert dataset.type == 'ADE20KDataset'
    assert dataset.pipeline[1] == dict(type='LoadAnnotations',
                                       reduce_zero_label=True)


def build_in_mmdet(cfg):
    """Build one module in mmdet's scope, leaving the global scope as is."""
    import mixedae_mm.downstream.mmdet  # noqa: F401
    from mmdet.registry import MODELS
    with DefaultScope.overwrite_default_scope('mmdet'):
        return MODELS.build(cfg)


def test_simple_fpn_shapes_and_ln2d():
    pytest.importorskip('mmdet')
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


@pytest.mark.parametrize('config', [DET_LONG, DET_SHORT])
def test_det_configs_load(repo_root, config):
    pytest.importorskip('mmdet')
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
    assert coco_epochs == (100 if config == DET_LONG else 12)
