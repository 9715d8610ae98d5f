"""tools/analysis_tools/estimate_gpu_hours.py: the images a schedule sees, and a FLOP count
that matches the ViT's closed form."""
import os.path as osp
import sys

import pytest
from mmengine.config import Config

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, osp.join(ROOT, 'tools', 'analysis_tools'))
import estimate_gpu_hours  # noqa: E402

COCO_TRAIN = estimate_gpu_hours.TRAIN_IMAGES['CocoDataset']


@pytest.mark.parametrize('config,gpus,images', [
    ('configs/seg/mixedae_vitb_upernet-160k_ade20k-512.py', 8,
     160_000 * 2 * 8),
    # 25 epochs of COCO repeated 4 times = 100 COCO epochs
    ('configs/det/mixedae_vitb_mask-rcnn_simplefpn-lsj-100e_coco.py', 16,
     100 * COCO_TRAIN),
    ('configs/det/mixedae_vitb_mask-rcnn_simplefpn-lsj-1x_coco.py', 16,
     12 * COCO_TRAIN),
    ('configs/finetune/mixedae_vitl_ft-50e_in1k.py', 8,
     50 * estimate_gpu_hours.TRAIN_IMAGES['ImageNet']),
    ('configs/seg/mixedae_vitl_upernet-160k_ade20k-512.py', 8,
     160_000 * 2 * 8),
    ('configs/det/mixedae_vitl_mask-rcnn_simplefpn-lsj-100e_coco.py', 16,
     100 * COCO_TRAIN),
])
def test_images_seen(config, gpus, images):
    cfg = Config.fromfile(osp.join(ROOT, config))
    assert estimate_gpu_hours.images_seen(cfg, gpus) == images


def test_forward_flops_of_a_vit_classifier():
    cfg = Config.fromfile(
        osp.join(ROOT, 'configs/finetune/mixedae_vitb_ft-100e_in1k.py'))
    cfg.merge_from_dict({
        'model.backbone.arch': 'demo-tiny',
        'model.backbone.img_size': 64,
        'model.backbone.patch_size': 8,
        'model.head.in_channels': 192,
    })
    flops, hw, step_factor = estimate_gpu_hours.forward_flops(cfg)
    assert hw == (64, 64) and step_factor == 3
    # closed form of the matmuls: per layer 24 N D^2 (qkv, proj, MLP 4x)
    # + 4 N^2 D (attention), N = 65 tokens, D = 192; patch embedding
    # 2 * 64 * 3 * 8 * 8 * D; classifier 2 * D * 1000
    n, d = 65, 192
    expected = 6 * (24 * n * d * d + 4 * n * n * d) + \
        2 * 64 * 3 * 64 * d + 2 * d * 1000
    assert flops == expected
