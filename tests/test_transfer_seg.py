"""ADE20K UperNet (mmsegmentation) from a MixedAE pretraining checkpoint: the
real config with tiny overrides, a real ADE20K-layout dataset, real mIoU."""
import os
import os.path as osp

import numpy as np
import pytest
from mmengine.config import Config
from PIL import Image

from transfer_utils import (assert_backbone_equals_pretrained,
                            assert_cpu_fp32_and_scaled_lr, build_model,
                            evaluate, train)

pytest.importorskip('mmseg')

CONFIG = 'configs/seg/mixedae_vitb_upernet-160k_ade20k-512.py'


def tiny_ade20k(root, per_split=(4, 2), size=(72, 96)):
    """ADE20K's layout: ``images/{training,validation}/*.jpg`` and
    ``annotations/...png`` label maps where 0 is "other" (dropped by
    ``reduce_zero_label``) and 1..150 are classes."""
    rng = np.random.default_rng(0)
    colours = {1: (200, 40, 40), 2: (40, 200, 40), 3: (40, 40, 200)}
    height, width = size
    for split, count in zip(('training', 'validation'), per_split):
        os.makedirs(osp.join(root, 'images', split))
        os.makedirs(osp.join(root, 'annotations', split))
        for i in range(count):
            label = np.zeros(size, np.uint8)
            for cls in colours:
                top, left = rng.integers(0, height // 2), rng.integers(
                    0, width // 2)
                label[top:top + height // 2, left:left + width // 2] = cls
            image = rng.integers(0, 40, (*size, 3)).astype(np.uint8)
            for cls, colour in colours.items():
                image[label == cls] += np.array(colour, np.uint8)
            name = f'ADE_{split}_{i:08d}'
            Image.fromarray(image).save(
                osp.join(root, 'images', split, name + '.jpg'))
            Image.fromarray(label).save(
                osp.join(root, 'annotations', split, name + '.png'))
    return root


def tiny_overrides(checkpoint, data_root, crop=64):
    """Shrink the ViT-B/512 recipe to the demo encoder and 64px crops."""
    return {
        'model.backbone.arch': 'demo-tiny',
        'model.backbone.img_size': crop,
        'model.backbone.patch_size': 8,
        'model.backbone.out_indices': [1, 2, 3, 5],
        'model.backbone.init_cfg.checkpoint': checkpoint,
        'model.data_preprocessor.size': (crop, crop),
        'model.neck.embed_dim': 192,
        'model.decode_head.in_channels': [192] * 4,
        'model.decode_head.channels': 32,
        'model.auxiliary_head.in_channels': 192,
        'model.auxiliary_head.channels': 32,
        'model.test_cfg.crop_size': (crop, crop),
        'model.test_cfg.stride': (crop * 2 // 3, crop * 2 // 3),
        'train_dataloader.batch_size': 2,
        'train_dataloader.num_workers': 0,
        'train_dataloader.persistent_workers': False,
        'train_dataloader.dataset.data_root': data_root,
        'train_dataloader.dataset.pipeline.2.scale': (crop * 4, crop),
        'train_dataloader.dataset.pipeline.3.crop_size': (crop, crop),
        'val_dataloader.num_workers': 0,
        'val_dataloader.persistent_workers': False,
        'val_dataloader.dataset.data_root': data_root,
        'val_dataloader.dataset.pipeline.1.scale': (crop * 4, crop),
        'test_dataloader.dataset.data_root': data_root,
        'train_cfg.max_iters': 1,
        'train_cfg.val_interval': 1,
        'default_hooks.logger.interval': 1,
    }


def test_segmentor_loads_every_pretrained_tensor(repo_root,
                                                 pretrained_checkpoint):
    model = build_model(osp.join(repo_root, CONFIG),
                        tiny_overrides(pretrained_checkpoint, 'unused'))
    assert_backbone_equals_pretrained(model.backbone, pretrained_checkpoint)
    # the transfer additions start neutral: zero relative position bias
    for layer in model.backbone.layers:
        assert not layer.attn.relative_position_bias_table.any()


def test_full_config_matches_the_recipe(repo_root):
    cfg = Config.fromfile(osp.join(repo_root, CONFIG))
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


@pytest.mark.slow
def test_train_validate_and_test(repo_root, pretrained_checkpoint,
                                 tmp_path):
    data = tiny_ade20k(str(tmp_path / 'ade'))
    overrides = tiny_overrides(pretrained_checkpoint, data)
    log = train(repo_root, CONFIG, tmp_path / 'work', overrides)
    assert 'Iter(train) [1/1]' in log
    assert_cpu_fp32_and_scaled_lr(log, 1e-4, 2, 16)
    assert 'mIoU:' in log and 'aAcc:' in log
    # the saved checkpoint evaluates with tools/test.py (weights-only load)
    log = evaluate(repo_root, CONFIG, tmp_path / 'work', overrides)
    assert 'mIoU:' in log and 'aAcc:' in log
