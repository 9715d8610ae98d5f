"""tools/analysis_tools/estimate_gpu_hours.py and mixedae_mm.analysis.
gpu_hours: the images a schedule sees, a FLOP count that matches the ViT's
closed form, hours from a given throughput, and numeric flags checked."""
import os.path as osp

import pytest
import torch
from conftest import load_tool
from mmengine.config import Config

from mixedae_mm.analysis.gpu_hours import (TRAIN_IMAGES, forward_flops,
                                           images_seen)

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
estimate_gpu_hours = load_tool('analysis_tools/estimate_gpu_hours.py')

COCO_TRAIN = TRAIN_IMAGES['CocoDataset']


@pytest.mark.parametrize('config,gpus,images', [
    ('configs/seg/mixedae_vitb_upernet-160k_ade20k-512.py', 8,
     160_000 * 2 * 8),
    # 25 epochs of COCO repeated 4 times = 100 COCO epochs
    ('configs/det/mixedae_vitb_mask-rcnn_simplefpn-lsj-100e_coco.py', 16,
     100 * COCO_TRAIN),
    ('configs/det/mixedae_vitb_mask-rcnn_simplefpn-lsj-1x_coco.py', 16,
     12 * COCO_TRAIN),
    ('configs/finetune/mixedae_vitl_ft-50e_in1k.py', 8,
     50 * TRAIN_IMAGES['ImageNet']),
    ('configs/seg/mixedae_vitl_upernet-160k_ade20k-512.py', 8,
     160_000 * 2 * 8),
    ('configs/det/mixedae_vitl_mask-rcnn_simplefpn-lsj-100e_coco.py', 16,
     100 * COCO_TRAIN),
])
def test_images_seen(config, gpus, images):
    cfg = Config.fromfile(osp.join(ROOT, config))
    assert images_seen(cfg, gpus) == images


def test_forward_flops_of_a_vit_classifier():
    cfg = Config.fromfile(
        osp.join(ROOT, 'configs/finetune/mixedae_vitb_ft-100e_in1k.py'))
    cfg.merge_from_dict({
        'model.backbone.arch': 'demo-tiny',
        'model.backbone.img_size': 64,
        'model.backbone.patch_size': 8,
        'model.head.in_channels': 192,
    })
    flops, hw, step_factor = forward_flops(cfg)
    assert hw == (64, 64) and step_factor == 3
    # closed form of the matmuls: per layer 24 N D^2 (qkv, proj, MLP 4x)
    # + 4 N^2 D (attention), N = 65 tokens, D = 192; patch embedding
    # 2 * 64 * 3 * 8 * 8 * D; classifier 2 * D * 1000
    n, d = 65, 192
    expected = 6 * (24 * n * d * d + 4 * n * n * d) + \
        2 * 64 * 3 * 64 * d + 2 * d * 1000
    assert flops == expected


IMAGENET = TRAIN_IMAGES['ImageNet']


@pytest.mark.parametrize('config,gpus,images', [
    ('configs/mixedae_vitb_1600e.py', 8, 1600 * IMAGENET),
    ('configs/mixedae_vitb_300e.py', 8, 300 * IMAGENET),
    # iteration-based: 160k iterations x 2 images x 16 GPUs
    ('configs/seg/mixedae_vitb_upernet-160k_ade20k-512.py', 16,
     160_000 * 2 * 16),
])
def test_hours_from_a_measured_throughput(config, gpus, images, capsys):
    """--images-per-second: hours = images seen / images per second per
    GPU / 3600, no FLOPs counted, and the wall time on ``gpus`` GPUs."""
    hours = estimate_gpu_hours.main(
        [osp.join(ROOT, config), '--images-per-second', '502',
         '--gpus', str(gpus)])
    assert hours == images / 502 / 3600
    line = capsys.readouterr().out
    assert '502 images/s per GPU (given)' in line
    assert f'{hours:,.0f} GPU hours ({hours / gpus:,.1f} h on {gpus})' \
        in line


def test_flop_fallback_counts_a_pretraining_step_not_a_full_forward():
    """A MixedAE model's encoder sees a quarter of each image's patches:
    its step is counted as benchmark_vs_mae.py counts it (forward and
    backward of model.loss), not as 3 forwards of the full ViT."""
    cfg = Config.fromfile(osp.join(ROOT, 'configs/mixedae_vitb_1600e.py'))
    cfg.merge_from_dict({
        'model.backbone.arch': 'demo-tiny',
        'model.backbone.img_size': 64,
        'model.backbone.patch_size': 8,
    })
    flops, hw, step_factor = forward_flops(cfg)
    assert hw == (64, 64) and step_factor == 1

    from mixedae_mm.analysis import Trainer
    from mixedae_mm.downstream import build_model
    cfg.model.backbone.pop('init_cfg', None)
    model = build_model(cfg.model, 'mmpretrain')
    group = model.backbone.group_size
    step = Trainer(model, torch.device('cpu'), 'none', False).flops(
        torch.randn(group, 3, 64, 64))
    assert flops == step / group


@pytest.mark.parametrize('flag,value,says', [
    ('--gpus', '-8', 'argument --gpus: must be an integer >= 1, got -8'),
    ('--gpus', '0', 'argument --gpus: must be an integer >= 1, got 0'),
    ('--images-per-second', '0',
     'argument --images-per-second: must be > 0, got 0'),
    ('--images-per-second', 'inf',
     "argument --images-per-second: expected a finite number, got 'inf'"),
    ('--peak-tflops', '-312', 'argument --peak-tflops: must be > 0'),
    ('--utilisation', '1.5',
     'argument --utilisation: must be in (0, 1], got 1.5'),
    ('--utilisation', '0', 'argument --utilisation: must be in (0, 1]'),
])
def test_bad_numbers_exit_2_naming_the_flag(flag, value, says, capsys):
    with pytest.raises(SystemExit) as stop:
        estimate_gpu_hours.parse_args(
            [osp.join(ROOT, 'configs/mixedae_vitb_1600e.py'), flag, value])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert says in err
    assert 'Traceback' not in err


def test_epochs_of_a_dataset_it_does_not_know(capsys):
    config = osp.join(ROOT, 'configs/mixedae_vitb_1600e.py')
    custom = ['--cfg-options', 'train_dataloader.dataset.type=CustomDataset']
    with pytest.raises(SystemExit) as stop:
        estimate_gpu_hours.main([config, '--images-per-second', '10'] +
                                custom)
    assert str(stop.value.code).startswith(
        'estimate_gpu_hours.py: error: the size of a CustomDataset training '
        'set is not known')
    assert str(stop.value.code).endswith('pass --train-images N')
    hours = estimate_gpu_hours.main(
        [config, '--images-per-second', '10', '--train-images', '5000'] +
        custom)
    assert hours == 1600 * 5000 / 10 / 3600
