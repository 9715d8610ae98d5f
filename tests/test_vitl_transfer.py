"""The ViT-L transfer recipes: real configs, built at full width and depth
(random weights; the pretraining checkpoint is not needed), their recipe
values, their layer-wise lr, and a forward on a small input."""
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from mmengine.optim import build_optim_wrapper
from mmengine.registry import DefaultScope

from mixedae_mm import downstream

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
FINETUNE = 'configs/finetune/mixedae_vitl_ft-50e_in1k.py'
SEG = 'configs/seg/mixedae_vitl_upernet-160k_ade20k-512.py'
DET = 'configs/det/mixedae_vitl_mask-rcnn_simplefpn-lsj-100e_coco.py'


def load(config, overrides=None):
    cfg = Config.fromfile(osp.join(ROOT, config))
    assert cfg.model.backbone.init_cfg.checkpoint == \
        'work_dirs/mixedae_vitl_1600e/epoch_1600.pth'
    assert cfg.optim_wrapper.dtype == 'bfloat16'
    cfg.merge_from_dict(overrides or {})
    cfg.model.backbone.pop('init_cfg')  # random weights
    return cfg


def build(cfg):
    model = downstream.build_model(cfg.model, cfg.default_scope).eval()
    backbone = model.backbone
    assert (backbone.embed_dims, backbone.num_layers) == (1024, 24)
    assert len(backbone.layers) == 24
    assert backbone.layers[0].attn.num_heads == 16
    return model


def layer_lrs(model, cfg):
    """lr of the patch embedding, of the last block, and of the head, as the
    recipe's optimizer constructor assigns them."""
    optim_cfg = cfg.optim_wrapper.copy()
    if not torch.cuda.is_available():  # as tools/train.py does on a CPU
        optim_cfg.type = 'OptimWrapper'
        optim_cfg.pop('dtype')
    with DefaultScope.overwrite_default_scope(cfg.default_scope):
        wrapper = build_optim_wrapper(model, optim_cfg)
    lr = {}
    for group in wrapper.optimizer.param_groups:
        for name in group['param_names']:
            lr[name] = group['lr']
    last = next(n for n in lr if n.startswith('backbone.layers.23.'))
    head = next(n for n in lr if not n.startswith('backbone.'))
    return lr['backbone.patch_embed.projection.weight'], lr[last], lr[head]


def test_finetune_vitl(tmp_path):
    # a 64px input (4 x 4 patches) keeps the forward cheap
    cfg = load(FINETUNE, {'model.backbone.img_size': 64})
    assert cfg.train_cfg.max_epochs == 50
    assert cfg.param_scheduler[-1].end == 50
    assert cfg.param_scheduler[-1].T_max == 45
    assert cfg.model.backbone.drop_path_rate == 0.2
    assert cfg.auto_scale_lr.base_batch_size == 1024
    assert cfg.train_dataloader.batch_size * 8 == 1024
    model = build(cfg)
    embed_lr, last_lr, head_lr = layer_lrs(model, cfg)
    assert head_lr == pytest.approx(4e-3)
    assert last_lr == pytest.approx(4e-3 * 0.75)
    assert embed_lr == pytest.approx(4e-3 * 0.75**25)
    with torch.no_grad():
        logits = model(torch.randn(1, 3, 64, 64), mode='tensor')
    assert logits.shape == (1, 1000)


def test_upernet_vitl():
    cfg = load(SEG, {
        'model.backbone.img_size': 64,
        'model.data_preprocessor.size': (64, 64),
    })
    assert cfg.model.backbone.out_indices == [7, 11, 15, 23]
    assert cfg.model.backbone.drop_path_rate == 0.2
    assert cfg.model.backbone.use_rel_pos_bias
    assert cfg.model.neck.embed_dim == 1024
    assert cfg.model.decode_head.in_channels == [1024] * 4
    model = build(cfg)
    assert list(model.backbone.out_indices) == [7, 11, 15, 23]
    embed_lr, last_lr, head_lr = layer_lrs(model, cfg)
    assert head_lr == pytest.approx(1e-4)
    assert last_lr == pytest.approx(1e-4 * 0.75)
    assert embed_lr == pytest.approx(1e-4 * 0.75**25)
    with torch.no_grad():
        feats = model.extract_feat(torch.randn(1, 3, 64, 64))
        logits = model(torch.randn(1, 3, 64, 64), mode='tensor')
    # blocks 8/12/16/24 resampled x4 / x2 / x1 / x0.5 from the 4 x 4 grid
    assert [tuple(f.shape) for f in feats] == [
        (1, 1024, 16, 16), (1, 1024, 8, 8), (1, 1024, 4, 4), (1, 1024, 2, 2)]
    assert logits.shape == (1, 150, 16, 16)


def test_mask_rcnn_vitl():
    # 224px = one 14 x 14 window: every block's attention runs, cheaply
    cfg = load(DET, {'model.backbone.img_size': 224})
    assert cfg.model.backbone.drop_path_rate == 0.4
    assert cfg.model.backbone.global_attn_indexes == [5, 11, 17, 23]
    assert cfg.model.neck.in_channels == 1024
    assert cfg.auto_scale_lr.base_batch_size == 64
    model = build(cfg)
    assert model.backbone.window_sizes == [
        0 if i in (5, 11, 17, 23) else 14 for i in range(24)]
    assert list(model.backbone.out_indices) == [23]
    embed_lr, last_lr, head_lr = layer_lrs(model, cfg)
    assert head_lr == pytest.approx(1e-4)
    assert last_lr == pytest.approx(1e-4 * 0.8)
    assert embed_lr == pytest.approx(1e-4 * 0.8**25)
    with torch.no_grad():
        feats = model.extract_feat(torch.randn(1, 3, 224, 224))
    assert [tuple(f.shape) for f in feats[:4]] == [
        (1, 256, 224 // s, 224 // s) for s in (4, 8, 16, 32)]
