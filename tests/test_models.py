"""The registered MixedAE modules: shapes, ablations, MAE equivalence."""
import copy
import re

import pytest
import torch
from mmengine.config import Config
from mmengine.optim import OptimWrapper

import mixedae_mm  # noqa: F401
from mixedae_mm import ops
from mixedae_mm.ops.fast import cpu_kernels
from mixedae_mm.models import MixedAE, MixedAEViT, MixedEncoding
from mmpretrain.registry import MODELS

TINY_ARCH = dict(
    embed_dims=32, num_layers=2, num_heads=2, feedforward_channels=64)


def tiny_cfg(**overrides):
    cfg = dict(
        type='MixedAE',
        backbone=dict(
            type='MixedAEViT', arch=TINY_ARCH, img_size=32, patch_size=8),
        neck=dict(
            type='MixedAEPretrainDecoder',
            decoder_embed_dim=16,
            decoder_depth=1,
            decoder_num_heads=2),
        head=dict(
            type='MixedAEPretrainHead',
            norm_pix=True,
            loss=dict(type='PixelReconstructionLoss', criterion='L2')))
    for key, value in overrides.items():
        if isinstance(value, dict) and key in cfg:
            cfg[key].update(value)
        else:
            cfg[key] = value
    return cfg


def build(**overrides):
    torch.manual_seed(0)
    model = MODELS.build(tiny_cfg(**overrides))
    model.init_weights()
    return model


def test_full_mixedae_losses_and_logs():
    model = build()
    losses = model.loss(torch.randn(8, 3, 32, 32), [])
    assert {'loss_rec', 'loss_homo', 'homo_acc', 'homo_acc_l0',
            'homo_acc_l1'} <= set(losses)
    for value in losses.values():
        assert torch.isfinite(value)
    assert 0 <= losses['homo_acc'] <= 1


def test_shapes_are_derived_from_the_backbone():
    model = build()
    assert model.neck.num_patches == 16
    assert model.neck.decoder_embed.in_features == 32
    assert model.neck.decoder_pos_embed.shape == (1, 17, 16)
    assert model.head.patch_size == 8
    assert model.neck.decoder_pred.out_features == 8 * 8 * 3


def test_contradicting_derived_value_is_an_error():
    with pytest.raises(ValueError, match='num_patches=196 contradicts'):
        build(neck=dict(num_patches=196))


def test_backbone_mixed_forward_shapes_and_topk():
    model = build()
    enc = model.backbone(torch.randn(8, 3, 32, 32), mask=True, return_topk=True)
    assert isinstance(enc, MixedEncoding)
    assert enc.tokens.shape == (2, 17, 32)
    assert enc.owner.shape == (2, 16)
    assert enc.homo_accuracy.shape == (2, )
    assert len(enc.topk_indices) == 2
    assert enc.topk_indices[0].shape == (2, 2, 16, 4)
    assert model.backbone(torch.randn(8, 3, 32, 32),
                          mask=True).topk_indices is None


def test_decoder_predicts_every_source_image():
    model = build()
    enc = model.backbone(torch.randn(8, 3, 32, 32), mask=True)
    pred = model.neck(enc.tokens, owner=enc.owner)
    assert pred.shape == (8, 16, 8 * 8 * 3)
    with pytest.raises(TypeError, match="'owner'"):
        model.neck(enc.tokens)


def test_unmixed_decoder_input_holds_own_tokens_and_segment():
    """Image g of a group sees its own tokens + slot-g segment embedding."""
    model = build()
    neck = model.neck
    captured = {}
    neck.decode = lambda x: captured.setdefault('x', x)
    enc = model.backbone(torch.randn(8, 3, 32, 32), mask=True)
    neck(enc.tokens, owner=enc.owner)
    x = captured['x']
    projected = neck.decoder_embed(enc.tokens)
    for b in range(8):
        m, g = divmod(b, 4)
        own = enc.owner[m] == g
        base = neck.decoder_pos_embed[0, 1:] + neck.segment_embed[g]
        torch.testing.assert_close(x[b, 1:][own],
                                   (projected[m, 1:] + base)[own])
        torch.testing.assert_close(
            x[b, 1:][~own], (neck.mask_token[0, 0] + base)[~own])


def test_batch_not_multiple_of_group_size_is_a_clear_error():
    model = build()
    with pytest.raises(ValueError, match='multiple of 4'):
        model.loss(torch.randn(6, 3, 32, 32), [])


def test_grid_not_divisible_by_group_is_rejected_at_build_time():
    with pytest.raises(ValueError, match='divisible by the mixing group'):
        build(backbone=dict(img_size=24))  # 3x3 patches


def test_wrong_input_size_is_a_clear_error():
    with pytest.raises(ValueError, match='must be 32x32'):
        build().loss(torch.randn(8, 3, 48, 48), [])


@pytest.mark.parametrize('ablation,has_homo_loss,has_homo_acc', [
    ('none', True, True),
    ('homo_attn_only', False, True),
    ('naive_mixing', False, False),
    ('mae', False, False),
])
def test_ablation_switches(ablation, has_homo_loss, has_homo_acc):
    model = build(ablation=ablation)
    losses = model.loss(torch.randn(8, 3, 32, 32), [])
    assert ('loss_homo' in losses) == has_homo_loss
    assert ('homo_acc' in losses) == has_homo_acc
    assert torch.isfinite(losses['loss_rec'])


def test_naive_mixing_runs_plain_attention():
    model = build(ablation='naive_mixing')
    assert model.backbone.homo_attn_layers == []
    assert model.backbone.mixing


def test_unknown_choices_are_rejected():
    with pytest.raises(ValueError, match='ablation must be one of'):
        build(ablation='mixup')
    with pytest.raises(ValueError, match='segment_embed must be one of'):
        build(segment_embed='both')


@pytest.mark.parametrize('where', ['decoder', 'encoder', 'none'])
def test_segment_embed_choice(where):
    model = build(segment_embed=where)
    assert (model.backbone.segment_embed is not None) == (where == 'encoder')
    assert (model.neck.segment_embed is not None) == (where == 'decoder')
    assert torch.isfinite(model.loss(torch.randn(8, 3, 32, 32),
                                     [])['loss_rec'])


def test_homo_attn_layers_subset():
    model = build(backbone=dict(homo_attn_layers=[-1]))
    assert model.backbone.homo_attn_layers == [1]
    losses = model.loss(torch.randn(8, 3, 32, 32), [])
    assert 'homo_acc_l1' in losses and 'homo_acc_l0' not in losses


#: ``--cfg-options`` that shrink the ViT-B recipe to a tiny model
TINY_VITB_OPTIONS = {
    'model.backbone.arch': 'demo-tiny',
    'model.backbone.img_size': 64,
    'model.backbone.patch_size': 8,
    'model.neck.decoder_embed_dim': 32,
    'model.neck.decoder_depth': 1,
    'model.neck.decoder_num_heads': 2,
}
SHIPPED = {
    'vitb_1600e': ('configs/mixedae_vitb_1600e.py', TINY_VITB_OPTIONS),
    'demo': ('configs/demo/mixedae_vit-tiny-p8_demo.py', {}),
}


def build_shipped(repo_root, config, **options):
    """The model of a shipped config, merged with ``options`` the way
    ``tools/train.py --cfg-options`` merges them."""
    path, shrink = SHIPPED[config]
    cfg = Config.fromfile(f'{repo_root}/{path}')
    cfg.merge_from_dict({**shrink, **options})
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.init_weights()
    return model


#: what each ablation means: (mixing, homologous attention in every layer,
#: loss and log terms)
ABLATION_EXPECTED = {
    'none': (True, True, {'loss_rec', 'loss_homo', 'homo_acc'}),
    'mae': (False, False, {'loss_rec'}),
    'naive_mixing': (True, False, {'loss_rec'}),
    'homo_attn_only': (True, True, {'loss_rec', 'homo_acc'}),
}


@pytest.mark.parametrize('config', sorted(SHIPPED))
@pytest.mark.parametrize('ablation', sorted(ABLATION_EXPECTED))
def test_ablation_is_one_line_on_the_shipped_configs(repo_root, config,
                                                     ablation):
    """``--cfg-options model.ablation=X`` builds from the shipped recipe and
    trains a step with the loss terms and attention the ablation means."""
    model = build_shipped(repo_root, config, **{'model.ablation': ablation})
    mixing, homo_attention, terms = ABLATION_EXPECTED[ablation]
    backbone = model.backbone
    assert backbone.mixing == mixing
    num_layers = backbone.num_layers
    assert backbone.homo_attn_layers == (
        list(range(num_layers)) if homo_attention else [])
    # no group slots without mixing; the recipe's decoder slot otherwise
    assert (model.neck.segment_embed is not None) == mixing

    size = backbone.img_size[0]
    images = torch.randint(0, 255, (8, 3, size, size), dtype=torch.uint8)
    optim = OptimWrapper(torch.optim.AdamW(model.parameters(), lr=1e-4))
    log_vars = model.train_step(dict(inputs=images, data_samples=None),
                                optim)
    per_layer = {f'homo_acc_l{i}' for i in range(num_layers)}
    assert set(log_vars) == {'loss'} | terms | (
        per_layer if homo_attention else set())
    assert all(torch.isfinite(v) for v in log_vars.values())
    if not mixing:  # MAE: random masking of 3/4 of each image's patches
        _, mask, _ = backbone(torch.randn(8, 3, size, size), mask=True)
        assert mask.mean(1).tolist() == [0.75] * 8
        assert not torch.equal(mask[0], mask[1])


@pytest.mark.skipif(not cpu_kernels.available(),
                    reason='no C compiler with OpenMP here')
def test_the_shipped_recipe_runs_the_c_kernel_on_the_cpu(repo_root,
                                                         monkeypatch):
    """README headline: on the CPU, every homologous layer of the ViT-B
    recipe selects and softmaxes through the C kernel, forward and
    backward."""
    calls = {'forward': 0, 'backward': 0}
    for direction in calls:
        op = getattr(cpu_kernels, f'topk_softmax_{direction}')

        def counted(*args, _op=op, _direction=direction):
            calls[_direction] += 1
            return _op(*args)

        monkeypatch.setattr(cpu_kernels, f'topk_softmax_{direction}',
                            counted)
    model = build_shipped(repo_root, 'vitb_1600e')
    size = model.backbone.img_size[0]
    images = torch.randint(0, 255, (8, 3, size, size), dtype=torch.uint8)
    optim = OptimWrapper(torch.optim.AdamW(model.parameters(), lr=1e-4))
    model.train_step(dict(inputs=images, data_samples=None), optim)
    layers = len(model.backbone.homo_attn_layers)
    assert layers == model.backbone.num_layers
    assert calls == {'forward': layers, 'backward': layers}


@pytest.mark.parametrize('options,message', [
    ({'model.ablation': 'naive_mixing', 'model.head.homo_loss_weight': 1.0},
     "homo_loss_weight=1.0 contradicts ablation='naive_mixing'"),
    ({'model.ablation': 'naive_mixing', 'model.backbone.homo_attn_layers':
      [-1]}, "homo_attn_layers=[-1] contradicts ablation='naive_mixing'"),
    ({'model.ablation': 'homo_attn_only', 'model.head.homo_loss_weight': 0.1},
     "homo_loss_weight=0.1 contradicts ablation='homo_attn_only'"),
    ({'model.ablation': 'mae', 'model.segment_embed': 'encoder'},
     "segment_embed='encoder' contradicts ablation='mae'"),
])
def test_a_value_chosen_next_to_an_ablation_is_reported(repo_root, options,
                                                        message):
    with pytest.raises(ValueError, match=re.escape(message)):
        build_shipped(repo_root, 'vitb_1600e', **options)


def test_ablation_accepts_a_value_it_would_set_itself(repo_root):
    model = build_shipped(repo_root, 'demo', **{
        'model.ablation': 'naive_mixing',
        'model.head.homo_loss_weight': 0.
    })
    assert model.head.homo_loss_weight == 0
    assert model.backbone.homo_attn_layers == []


def test_mixing_off_reproduces_mmpretrain_mae():
    """Same weights, same seed (so the same mask): the same loss."""
    cfg = tiny_cfg(ablation='mae', segment_embed='none')
    ours = MODELS.build(copy.deepcopy(cfg))
    ours.init_weights()
    mae = MODELS.build(
        dict(
            type='MAE',
            backbone=dict(
                type='MAEViT', arch=TINY_ARCH, img_size=32, patch_size=8),
            neck=dict(
                type='MAEPretrainDecoder',
                num_patches=16,
                patch_size=8,
                embed_dim=32,
                decoder_embed_dim=16,
                decoder_depth=1,
                decoder_num_heads=2),
            head=dict(
                type='MAEPretrainHead',
                norm_pix=True,
                patch_size=8,
                loss=dict(type='PixelReconstructionLoss', criterion='L2'))))
    mae.load_state_dict(ours.state_dict(), strict=True)
    images = torch.randn(4, 3, 32, 32)
    torch.manual_seed(3)
    expected = mae.loss(images, [])['loss']
    torch.manual_seed(3)
    got = ours.loss(images, [])
    assert set(got) == {'loss_rec'}
    torch.testing.assert_close(got['loss_rec'], expected)


def test_plain_mode_is_mmpretrain_vision_transformer():
    """Checkpoint keys and features equal those of VisionTransformer."""
    backbone = MixedAEViT(arch=TINY_ARCH, img_size=32, patch_size=8)
    backbone.init_weights()
    vit = MODELS.build(
        dict(
            type='VisionTransformer', arch=TINY_ARCH, img_size=32,
            patch_size=8, out_type='raw'))
    vit.load_state_dict(backbone.state_dict(), strict=True)
    vit.eval()
    backbone.eval()
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(backbone(x, mask=None)[0], vit(x)[0])
    model = build()
    model.eval()
    feats = model.extract_feat(x)
    assert feats[0].shape == (2, 17, 32)


def test_homologous_layer_equals_plain_layer_when_k_is_all_patches():
    backbone = MixedAEViT(arch=TINY_ARCH, img_size=32, patch_size=8)
    backbone.init_weights()
    backbone.eval()
    from mmpretrain.models.backbones.vision_transformer import \
        TransformerEncoderLayer
    x = torch.randn(2, 17, 32)
    layer = backbone.layers[0]
    out = layer(x, top_k=16)
    # mmpretrain's own forward of the same layer
    torch.testing.assert_close(out, TransformerEncoderLayer.forward(layer, x))


@pytest.mark.slow
def test_vitb_config_one_training_step(repo_root):
    cfg = Config.fromfile(f'{repo_root}/configs/mixedae_vitb_1600e.py')
    assert cfg.model.backbone.arch == 'b'
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.init_weights()
    assert isinstance(model, MixedAE)
    assert model.backbone.top_k == 49 and model.backbone.group_size == 4
    optim = OptimWrapper(torch.optim.AdamW(model.parameters(), lr=1e-4))
    data = dict(
        inputs=torch.randint(0, 255, (8, 3, 224, 224), dtype=torch.uint8),
        data_samples=None)
    log_vars = model.train_step(data, optim)
    assert {'loss', 'loss_rec', 'loss_homo', 'homo_acc'} <= set(log_vars)
    for key in ('loss_rec', 'loss_homo'):
        assert torch.isfinite(log_vars[key])
    torch.testing.assert_close(log_vars['loss'],
                               log_vars['loss_rec'] + log_vars['loss_homo'])


def test_mixed_encoder_token_count_matches_spec():
    """B/G * (N + 1) encoder tokens: fewer than MAE's B * (N/4 + 1)."""
    backbone = MixedAEViT(arch=TINY_ARCH, img_size=32, patch_size=8)
    enc = backbone(torch.randn(8, 3, 32, 32), mask=True)
    assert enc.tokens.shape[:2] == (8 // 4, 16 + 1)
    assert ops.reconstruction_mask(enc.owner, 4).shape == (8, 16)


@pytest.mark.parametrize('ablation', ['none', 'mae'])
def test_with_cp_gives_the_same_loss_and_gradients(ablation):
    """Activation checkpointing of encoder and decoder blocks changes memory,
    not results (drop path on, so the recomputation must replay the RNG)."""
    images = torch.randn(8, 3, 32, 32)
    results = []
    for with_cp in (False, True):
        model = build(
            ablation=ablation,
            segment_embed='none' if ablation == 'mae' else 'decoder',
            backbone=dict(with_cp=with_cp, drop_path_rate=0.1),
            neck=dict(with_cp=with_cp))
        torch.manual_seed(5)
        losses = model.loss(images, [])
        total = sum(v for k, v in losses.items() if k.startswith('loss'))
        total.backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters()
                 if p.grad is not None}
        results.append((losses, grads))
    (losses, grads), (cp_losses, cp_grads) = results
    for key in losses:
        torch.testing.assert_close(cp_losses[key], losses[key])
    assert grads.keys() == cp_grads.keys()
    for name in grads:
        torch.testing.assert_close(cp_grads[name], grads[name], atol=1e-6,
                                   rtol=1e-5, msg=name)


def test_with_cp_keeps_less_for_backward():
    images = torch.randn(8, 3, 32, 32)
    kept = []
    for with_cp in (False, True):
        model = build(backbone=dict(with_cp=with_cp),
                      neck=dict(with_cp=with_cp))
        shapes = []
        with torch.autograd.graph.saved_tensors_hooks(
                lambda t: shapes.append(t.numel()) or t, lambda t: t):
            model.loss(images, [])
        kept.append(sum(shapes))
    assert kept[1] < 0.7 * kept[0]


@pytest.mark.slow
def test_readable_attention_switch_gives_the_same_step(monkeypatch):
    """MIXEDAE_FAST_ATTN=0 (or set_fast_attn(False)) builds homologous
    attention on the readable path: the same losses and gradients as the
    fast path, from the same weights and seed."""
    from mixedae_mm.models.backbones import mixedae_vit
    results = []
    for fast in (True, False):
        monkeypatch.setattr(mixedae_vit, '_FAST_ATTN', fast)
        model = build()
        assert all(layer.attn.fast_attn == fast
                   for layer in model.backbone.layers)
        torch.manual_seed(5)
        losses = model.loss(torch.randn(8, 3, 32, 32), [])
        sum(v for k, v in losses.items() if k.startswith('loss')).backward()
        results.append((losses, {n: p.grad for n, p in
                                 model.named_parameters()
                                 if p.grad is not None}))
    (fast, fast_grads), (readable, readable_grads) = results
    assert fast.keys() == readable.keys()
    for key in fast:
        torch.testing.assert_close(readable[key], fast[key])
    for name in fast_grads:
        torch.testing.assert_close(readable_grads[name], fast_grads[name],
                                   atol=1e-6, rtol=1e-5, msg=name)
    # the environment variable, read when the package is imported
    import os
    import subprocess
    import sys
    switched = subprocess.run(
        [sys.executable, '-c', 'from mixedae_mm.models.backbones '
         'import use_fast_attn; print(use_fast_attn())'],
        env=dict(os.environ, MIXEDAE_FAST_ATTN='0'), capture_output=True,
        text=True, check=True)
    assert switched.stdout.split() == ['False']
