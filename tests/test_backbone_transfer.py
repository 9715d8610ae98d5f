"""MixedAEViT's transfer options and verified pretrained loading."""
import pytest
import torch
from torch import nn

import mixedae_mm  # noqa: F401
from mixedae_mm.engine.optim import ViTLayerDecayOptimWrapperConstructor
from mixedae_mm.models import MixedAEViT
from mixedae_mm.models.backbones.transfer import (relative_position_index,
                                                  window_partition,
                                                  window_unpartition)

TINY = dict(embed_dims=32, num_layers=2, num_heads=2, feedforward_channels=64)


def vit(**kwargs):
    torch.manual_seed(0)
    kwargs.setdefault('arch', TINY)
    kwargs.setdefault('img_size', 32)
    kwargs.setdefault('patch_size', 8)
    kwargs.setdefault('mixing', False)
    model = MixedAEViT(**kwargs)
    model.init_weights()
    model.eval()
    return model


@pytest.mark.parametrize('grid,window', [((4, 4), 2), ((5, 7), 3)])
def test_window_partition_round_trip(grid, window):
    x = torch.randn(2, grid[0] * grid[1], 6)
    windows, padded = window_partition(x, grid, window)
    assert windows.shape[1] == window * window
    assert padded[0] % window == 0 and padded[1] % window == 0
    torch.testing.assert_close(
        window_unpartition(windows, grid, padded, window), x)


def test_relative_position_index_is_translation_invariant():
    index = relative_position_index(3, 3, with_cls=False)
    # (0,0)->(1,1) and (1,1)->(2,2) have the same offset
    assert index[0, 4] == index[4, 8]
    assert index.max() == 5 * 5 - 1
    with_cls = relative_position_index(3, 3, with_cls=True)
    assert with_cls.shape == (10, 10)
    assert {with_cls[0, 1].item(), with_cls[1, 0].item(),
            with_cls[0, 0].item()} == {25, 26, 27}


def test_featmap_outputs_at_another_input_size():
    model = vit(out_indices=[0, 1], out_type='featmap', final_norm=False)
    outs = model(torch.randn(2, 3, 64, 48))
    assert [o.shape for o in outs] == [(2, 32, 8, 6)] * 2


def test_window_covering_the_grid_equals_global_attention_on_patches():
    windowed = vit(window_size=4, out_type='raw')
    plain = vit(out_type='raw')
    plain.load_state_dict(windowed.state_dict())
    x = torch.randn(2, 3, 32, 32)
    tokens, grid = plain.patch_embed(x)
    tokens = tokens + plain.pos_embed[:, 1:]
    for layer in plain.layers:
        tokens = layer(tokens)
    torch.testing.assert_close(windowed(x)[0], plain.ln1(tokens))


def test_windowed_with_global_blocks_and_padding():
    model = vit(window_size=3, global_attn_indexes=[-1], out_type='featmap')
    assert model.window_sizes == [3, 0]
    out = model(torch.randn(1, 3, 40, 40))[0]  # 5x5 grid, padded to 6x6
    assert out.shape == (1, 32, 5, 5)
    with pytest.raises(ValueError, match='drops the cls token'):
        vit(window_size=2, out_type='cls_token')


def test_zero_initialised_relative_bias_starts_as_plain_attention():
    with_bias = vit(use_rel_pos_bias=True)
    plain = vit()
    missing, unexpected = plain.load_state_dict(
        with_bias.state_dict(), strict=False)
    assert not missing
    assert all('relative_position_bias_table' in k for k in unexpected)
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(with_bias(x)[0], plain(x)[0])
    table = with_bias.layers[0].attn.relative_position_bias_table
    assert table.shape == ((2 * 4 - 1)**2 + 3, 2)
    with torch.no_grad():
        table.normal_()
    assert not torch.allclose(with_bias(x)[0], plain(x)[0])
    # other input sizes interpolate the table
    assert with_bias(torch.randn(1, 3, 48, 48))[0].shape == (1, 37, 32)


def _brute_force_index(height, width, with_cls):
    """BEiT's relative position index, pair by pair."""
    num_distances = (2 * height - 1) * (2 * width - 1)
    cells = [(y, x) for y in range(height) for x in range(width)]
    index = [[(yi - yj + height - 1) * (2 * width - 1) + xi - xj + width - 1
              for (yj, xj) in cells] for (yi, xi) in cells]
    if with_cls:
        index = [[num_distances + 2] + [num_distances] * len(cells)] + [
            [num_distances + 1] + row for row in index]
    return torch.tensor(index)


@pytest.mark.parametrize('window', [0, 2])
def test_relative_position_index_is_built_once_per_grid(monkeypatch, window):
    """Repeated forwards reuse one index per grid, on the table's device; the
    bias is BEiT's, and the state_dict holds only the tables."""
    from mixedae_mm.models.backbones import transfer as attention
    builds = []
    build = attention._build_relative_position_index

    def counting_build(*args):
        builds.append(args)
        return build(*args)

    monkeypatch.setattr(attention, '_build_relative_position_index',
                        counting_build)
    relative_position_index.cache_clear()
    model = vit(use_rel_pos_bias=True, window_size=window, out_type='featmap')
    for size in (32, 32, 48, 32, 48):
        model(torch.randn(1, 3, size, size))
    grids = {(4, 4), (6, 6)} if not window else {(2, 2)}
    assert sorted(args[:2] for args in builds) == sorted(grids)

    attn = model.layers[0].attn
    with torch.no_grad():
        attn.relative_position_bias_table.normal_()
    grid = (2, 2) if window else (4, 4)
    index = relative_position_index(*grid, not window, torch.device('cpu'))
    assert index is relative_position_index(*grid, not window,
                                            torch.device('cpu'))
    assert index.device == attn.relative_position_bias_table.device
    expected = _brute_force_index(*grid, not window)
    torch.testing.assert_close(index, expected)
    table = attn.relative_position_bias_table
    torch.testing.assert_close(attn.relative_position_bias(grid),
                               table[expected].permute(2, 0, 1))

    plain_keys = set(vit(window_size=window, out_type='featmap').state_dict())
    tables = {f'layers.{i}.attn.relative_position_bias_table'
              for i in range(2)}
    assert set(model.state_dict()) == plain_keys | tables


def test_pretraining_refuses_transfer_options():
    model = vit(use_rel_pos_bias=True, mixing=True)
    with pytest.raises(ValueError, match='transfer options'):
        model(torch.randn(4, 3, 32, 32), mask=True)


def test_frozen_stages_for_linear_probing():
    model = vit(frozen_stages=2)
    assert not any(p.requires_grad for p in model.parameters())
    model = vit(frozen_stages=1)
    assert not any(p.requires_grad for p in model.layers[0].parameters())
    assert all(p.requires_grad for p in model.layers[1].parameters())


def _save(tmp_path, state, name='ckpt.pth'):
    path = tmp_path / name
    torch.save({'state_dict': state}, path)
    return str(path)


def test_pretrained_loading_is_verified(tmp_path):
    source = vit(mixing=True, segment_embed=True)
    full = {f'backbone.{k}': v for k, v in source.state_dict().items()}
    full['neck.mask_token'] = torch.zeros(1, 1, 16)
    path = _save(tmp_path, full)

    target = vit(use_rel_pos_bias=True, out_type='avg_featmap',
                 final_norm=False,
                 init_cfg=dict(type='Pretrained', checkpoint=path,
                               prefix='backbone.'))
    target.init_weights()
    target_state = target.state_dict()
    for key, value in source.state_dict().items():
        if key in target_state:
            torch.testing.assert_close(target_state[key], value)
    report = target.load_pretrained(path, prefix='backbone.')
    assert 'segment_embed' in report['unused']
    assert any('relative_position_bias_table' in k for k in report['new'])

    with pytest.raises(RuntimeError, match="starts with 'encoder.'"):
        target.load_pretrained(path, prefix='encoder.')
    incomplete = dict(full)
    del incomplete['backbone.layers.1.attn.qkv.weight']
    with pytest.raises(RuntimeError, match=r'missing \[.layers.1.attn.qkv'):
        target.load_pretrained(_save(tmp_path, incomplete, 'bad.pth'),
                               prefix='backbone.')


def test_loading_into_a_larger_input_resizes_position_embeddings(tmp_path):
    """Pretrained at 32px (4x4 patches), transferred at 64px (8x8), as
    224 -> 512 (ADE20K) and 224 -> 1024 (COCO)."""
    from mmpretrain.models.utils import resize_pos_embed
    source = vit(mixing=True)
    path = _save(tmp_path,
                 {f'backbone.{k}': v for k, v in source.state_dict().items()})
    target = vit(img_size=64, use_rel_pos_bias=True, window_size=4,
                 global_attn_indexes=[1], out_type='featmap',
                 init_cfg=dict(type='Pretrained', checkpoint=path,
                               prefix='backbone.'))
    target.init_weights()
    assert target.pos_embed.shape == (1, 8 * 8 + 1, 32)
    expected = resize_pos_embed(source.pos_embed, (4, 4), (8, 8),
                                mode='bicubic', num_extra_tokens=1)
    torch.testing.assert_close(target.pos_embed, expected)
    torch.testing.assert_close(target.layers[0].attn.qkv.weight,
                               source.layers[0].attn.qkv.weight)
    assert target(torch.randn(1, 3, 64, 64))[0].shape == (1, 32, 8, 8)


class _Classifier(nn.Module):

    def __init__(self, backbone):
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(32, 10)


def test_layer_decay_scales_follow_the_formula():
    arch = dict(TINY, num_layers=12)
    model = _Classifier(vit(arch=arch, use_rel_pos_bias=True,
                            fix_pos_embed=False))
    constructor = ViTLayerDecayOptimWrapperConstructor(
        dict(optimizer=dict(type='AdamW', lr=1e-3, weight_decay=0.05)),
        paramwise_cfg=dict(layer_decay_rate=0.65))
    optimizer = constructor(model).optimizer
    lr, wd = {}, {}
    for group in optimizer.param_groups:
        for name in group['param_names']:
            lr[name], wd[name] = group['lr'], group['weight_decay']
    assert len(lr) == sum(1 for p in model.parameters() if p.requires_grad)

    def scale(depth):
        return 1e-3 * 0.65**(12 + 1 - depth)

    assert lr['backbone.patch_embed.projection.weight'] == pytest.approx(
        scale(0))
    assert lr['backbone.cls_token'] == pytest.approx(scale(0))
    assert lr['backbone.layers.0.attn.qkv.weight'] == pytest.approx(scale(1))
    assert lr['backbone.layers.11.ffn.layers.1.weight'] == pytest.approx(
        scale(12))
    assert lr['head.weight'] == pytest.approx(1e-3)
    assert lr['backbone.ln1.weight'] == pytest.approx(1e-3)
    # no weight decay: norms, biases, embeddings, relative position tables
    for name in ('backbone.layers.3.ln1.weight', 'backbone.layers.3.attn.qkv.bias',
                 'backbone.pos_embed', 'backbone.cls_token', 'head.bias',
                 'backbone.layers.5.attn.relative_position_bias_table'):
        assert wd[name] == 0, name
    for name in ('backbone.layers.3.attn.qkv.weight', 'head.weight',
                 'backbone.patch_embed.projection.weight'):
        assert wd[name] == 0.05, name


def test_layer_decay_needs_a_rate():
    constructor = ViTLayerDecayOptimWrapperConstructor(
        dict(optimizer=dict(type='AdamW', lr=1e-3)),
        paramwise_cfg=dict(num_layers=2))
    with pytest.raises(ValueError, match='layer_decay_rate'):
        constructor(_Classifier(vit()))
