"""Scaling up: the ViT-H/14 recipe, gradient accumulation, several nodes
and the memory estimate (docs/scale.md)."""
import os.path as osp
import time

import pytest
import torch
from mmengine.config import Config

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
VITH = osp.join(ROOT, 'configs/mixedae_vith-p14_1600e.py')


@pytest.mark.slow
def test_vith_p14_recipe_builds_and_takes_a_finite_step():
    """The ViT-H/14 recipe at full size: 16 x 16 = 256 positions, groups of
    4, top-64 homologous keys, MAE's ViT-H decoder; a forward + backward of
    the training loss on 4 random images (fp32, CPU) gives finite losses and
    gradients."""
    import mixedae_mm  # noqa: F401
    from mmpretrain.registry import MODELS
    cfg = Config.fromfile(VITH)
    start = time.perf_counter()
    model = MODELS.build(cfg.model)
    model.init_weights()
    backbone, neck = model.backbone, model.neck
    assert (backbone.embed_dims, backbone.num_layers) == (1280, 32)
    assert backbone.layers[0].attn.num_heads == 16
    assert backbone.patch_resolution == (16, 16)
    assert (backbone.num_patches, backbone.group_size, backbone.top_k) == (
        256, 4, 64)
    assert backbone.pos_embed.shape == (1, 257, 1280)
    assert neck.decoder_pos_embed.shape == (1, 257, 512)
    assert len(neck.decoder_blocks) == 8
    assert neck.decoder_pred.out_features == 14 * 14 * 3
    encoder_params = sum(p.numel() for p in backbone.parameters())
    assert 630e6 < encoder_params < 633e6  # ViT-H/14: 631M

    torch.manual_seed(0)
    losses = model.loss(torch.randn(4, 3, 224, 224), [])
    loss = losses['loss_rec'] + losses['loss_homo'] * 0.5
    loss.backward()
    for name in ('loss_rec', 'loss_homo', 'homo_acc'):
        assert torch.isfinite(losses[name]), name
    assert len([k for k in losses if k.startswith('homo_acc_l')]) == 32
    for name, param in model.named_parameters():
        if param.requires_grad:
            assert param.grad is not None and torch.isfinite(
                param.grad).all(), name
    print(f'ViT-H/14 build + step: {time.perf_counter() - start:.1f} s')
