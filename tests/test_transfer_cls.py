"""ImageNet fine-tuning and linear probing (mmpretrain) from a MixedAE
pretraining checkpoint: real configs, tiny overrides, real accuracy."""
import os
import os.path as osp

import pytest
import torch
from PIL import Image

from transfer_utils import (assert_backbone_equals_pretrained,
                            assert_cpu_fp32_and_scaled_lr, build_model,
                            evaluate, train)

FINETUNE = 'configs/finetune/mixedae_vitb_ft-100e_in1k.py'
LINEAR = 'configs/finetune/mixedae_vitb_linear-90e_in1k.py'


def tiny_imagenet(root, per_class=4, classes=2, size=72):
    """OpenMMLab's ImageNet layout: <split>/<wnid>/x.JPEG + meta/<split>.txt."""
    gen = torch.Generator().manual_seed(0)
    os.makedirs(osp.join(root, 'meta'))
    for split in ('train', 'val'):
        lines = []
        for label in range(classes):
            wnid = f'n0000000{label}'
            os.makedirs(osp.join(root, split, wnid))
            for i in range(per_class):
                # class 0 dark, class 1 bright: learnable, not trivial
                base = 60 + 120 * label
                pixels = (torch.randint(0, 60, (size, size, 3), generator=gen)
                          + base).clamp(0, 255).to(torch.uint8).numpy()
                name = f'{wnid}/{wnid}_{i}.JPEG'
                Image.fromarray(pixels).save(osp.join(root, split, name))
                lines.append(f'{name} {label}\n')
        with open(osp.join(root, 'meta', f'{split}.txt'), 'w') as f:
            f.writelines(lines)
    return root


def tiny_overrides(config, checkpoint, data_root, crop=64):
    """Shrink a ViT-B recipe to the demo encoder and a 64px crop."""
    overrides = {
        'model.backbone.arch': 'demo-tiny',
        'model.backbone.img_size': crop,
        'model.backbone.patch_size': 8,
        'model.backbone.init_cfg.checkpoint': checkpoint,
        'model.head.in_channels': 192,
        'train_dataloader.batch_size': 4,
        'train_dataloader.num_workers': 0,
        'train_dataloader.persistent_workers': False,
        'train_dataloader.dataset.data_root': data_root,
        'val_dataloader.batch_size': 4,
        'val_dataloader.num_workers': 0,
        'val_dataloader.persistent_workers': False,
        'val_dataloader.dataset.data_root': data_root,
        'test_dataloader.dataset.data_root': data_root,
        'train_cfg.max_epochs': 1,
        'default_hooks.logger.interval': 1,
    }
    if config == LINEAR:
        overrides['model.backbone.frozen_stages'] = 6  # all demo layers
        overrides['model.neck.input_features'] = 192
    return overrides


@pytest.mark.parametrize('config', [FINETUNE, LINEAR])
def test_transfer_model_loads_every_pretrained_tensor(
        repo_root, pretrained_checkpoint, config, tmp_path):
    model = build_model(osp.join(repo_root, config),
                  tiny_overrides(config, pretrained_checkpoint, str(tmp_path)))
    assert_backbone_equals_pretrained(model.backbone, pretrained_checkpoint)
    if config == LINEAR:
        assert not any(p.requires_grad for p in model.backbone.parameters())


@pytest.mark.slow
@pytest.mark.parametrize('config', [FINETUNE, LINEAR])
def test_train_validate_and_test(repo_root, pretrained_checkpoint, config,
                                 tmp_path):
    data = tiny_imagenet(str(tmp_path / 'imagenet'))
    overrides = tiny_overrides(config, pretrained_checkpoint, data)
    overrides['train_dataloader.dataset.pipeline.1.scale'] = 64
    if config == FINETUNE:
        overrides['val_dataloader.dataset.pipeline.1.scale'] = 72
        overrides['val_dataloader.dataset.pipeline.2.crop_size'] = 64
        overrides['model.train_cfg.augments.0.alpha'] = 0.8
    else:
        overrides['val_dataloader.dataset.pipeline.1.scale'] = 64
        overrides['val_dataloader.dataset.pipeline.2.crop_size'] = 64
    log = train(repo_root, config, tmp_path / 'work', overrides)
    assert 'Epoch(train) [1][2/2]' in log
    assert 'accuracy/top1:' in log and 'accuracy/top5:' in log
    if config == FINETUNE:  # AdamW 2e-3 @ 1024
        assert_cpu_fp32_and_scaled_lr(log, 2e-3, 4, 1024)
    else:  # LARS 6.4 @ 16384
        assert_cpu_fp32_and_scaled_lr(log, 6.4, 4, 16384)
    # the saved checkpoint evaluates with tools/test.py (weights-only load)
    log = evaluate(repo_root, config, tmp_path / 'work', overrides)
    assert 'accuracy/top1:' in log
