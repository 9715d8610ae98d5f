"""Checkpoint tools: extract the backbone, timm/MAE <-> ours, publish.

Every CLI runs once as a subprocess (as a user would call it); the other
cases call the same functions in-process to stay quick.
"""
import argparse
import hashlib
import os
import os.path as osp
import re
from functools import partial

import pytest
import torch
from torch import nn

from conftest import call_tool, load_tool, run_python

from mixedae_mm.checkpoints import (CheckpointError, converters, keymap,
                                    read_state_dict)

IMG, PATCH = 64, 8
#: the demo encoder (tests/conftest.py DEMO_ARCH) as timm arguments
TIMM_DEMO = dict(img_size=IMG, patch_size=PATCH, embed_dim=192, depth=6,
                 num_heads=3, mlp_ratio=4, qkv_bias=True)


def run_cli(repo_root, script, *args, check=True):
    return run_python(f'tools/model_converters/{script}', *args,
                      check=check, cwd=repo_root)


def load(path):
    return torch.load(path, map_location='cpu', weights_only=True)


def assert_same_tensors(a: dict, b: dict):
    assert sorted(a) == sorted(b)
    for key in a:
        assert a[key].dtype == b[key].dtype, key
        assert torch.equal(a[key], b[key]), key


def our_vit(path=None, prefix=''):
    """The demo encoder in transfer mode (plain ViT, raw tokens, final
    norm), optionally loaded through the verified loader."""
    from mixedae_mm.models import MixedAEViT
    model = MixedAEViT(arch='demo-tiny', img_size=IMG, patch_size=PATCH,
                       mixing=False, out_type='raw', final_norm=True)
    if path is not None:
        model.load_pretrained(path, prefix=prefix)
    model.eval()  # (mmpretrain's train() does not return the module)
    return model


def timm_vit(num_classes=0, seed=0):
    pytest.importorskip('timm')  # a safety net: requirements/tests.txt
    from timm.models.vision_transformer import VisionTransformer
    torch.manual_seed(seed)
    return VisionTransformer(
        num_classes=num_classes,
        norm_layer=partial(nn.LayerNorm, eps=1e-6),  # mmpretrain's LN eps
        **TIMM_DEMO).eval()


@pytest.fixture(scope='module')
def backbone_path(pretrained_checkpoint, repo_root, tmp_path_factory):
    """The fixture checkpoint's encoder, extracted by the CLI."""
    out = tmp_path_factory.mktemp('extract') / 'backbone.pth'
    proc = run_cli(repo_root, 'extract_backbone.py', pretrained_checkpoint,
                   out)
    assert re.match(r'\d+ tensors', proc.stdout)
    return str(out)


def build_mixedae(repo_root, seed=0):
    from mmengine.config import Config
    from mmpretrain.registry import MODELS

    import mixedae_mm  # noqa: F401
    cfg = Config.fromfile(
        osp.join(repo_root, 'configs/demo/mixedae_vit-tiny-p8_demo.py'))
    torch.manual_seed(seed)
    model = MODELS.build(cfg.model)
    model.init_weights()
    return model


# ------------------------------------------------------------ (a) extract
@pytest.mark.slow
def test_extract_backbone_keeps_every_encoder_tensor(pretrained_checkpoint,
                                                     backbone_path):
    full = load(pretrained_checkpoint)
    assert {'optimizer', 'message_hub'} <= set(full)  # what is left behind
    out = load(backbone_path)  # weights_only=True
    assert set(out) == {'state_dict', 'meta'}
    expected = {k[len('backbone.'):]: v for k, v in full['state_dict'].items()
                if k.startswith('backbone.')}
    assert_same_tensors(out['state_dict'], expected)
    assert all(type(v) is torch.Tensor for v in out['state_dict'].values())
    assert out['meta']['left_out'] == ['neck.*']

    loaded = our_vit().load_pretrained(backbone_path, prefix='')
    assert loaded['new'] == [] and loaded['unused'] == []
    assert len(loaded['loaded']) == len(expected)


def test_extract_segment_embed_only_on_request():
    state = {'backbone.cls_token': torch.zeros(1, 1, 4),
             'backbone.segment_embed': torch.ones(4, 4),
             'neck.mask_token': torch.zeros(1, 1, 2)}
    kept, dropped = converters.extract_backbone(state)
    assert sorted(kept) == ['cls_token']
    assert sorted(dropped) == ['backbone.segment_embed', 'neck.mask_token']
    kept, _ = converters.extract_backbone(state, keep_segment_embed=True)
    assert sorted(kept) == ['cls_token', 'segment_embed']
    with pytest.raises(CheckpointError, match='already an extracted'):
        converters.extract_backbone(kept)


# ------------------------------------------------- (b) timm equivalence
@pytest.mark.slow
def test_timm_vit_computes_the_same_features(backbone_path,
                                             pretrained_checkpoint,
                                             repo_root, tmp_path):
    out = tmp_path / 'vit_timm.pth'
    proc = run_cli(repo_root, 'convert_timm.py', backbone_path, out, '--to',
                   'timm')
    assert 'tensors (to timm)' in proc.stdout
    timm_state = load(out)
    assert all(isinstance(v, torch.Tensor) for v in timm_state.values())
    # a full pretraining checkpoint gives the same encoder
    from_full = converters.to_timm(load(pretrained_checkpoint)['state_dict'])
    assert_same_tensors(from_full.state, timm_state)
    assert all(k.startswith('neck.') for k in from_full.dropped)

    theirs = timm_vit()
    theirs.load_state_dict(timm_state, strict=True)
    ours = our_vit(backbone_path)
    x = torch.randn(2, 3, IMG, IMG, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = theirs.forward_features(x)  # (B, N + 1, D), normed
        (actual, ) = ours(x)
    assert actual.shape == expected.shape == (2, 65, 192)
    diff = (actual - expected).abs().max().item()
    print(f'\nours vs timm forward_features: max abs diff {diff:.3g}')
    assert diff <= 1e-5
    # the comparison can fail: other weights give other features
    with torch.no_grad():
        other = timm_vit(seed=1).forward_features(x)
    assert (actual - other).abs().max() > 1e-2


# ------------------------------------------------------- (c) round trips
@pytest.mark.slow
def test_timm_to_ours_to_timm_round_trip(repo_root, tmp_path):
    classifier = timm_vit(num_classes=10, seed=3)  # DeiT-like: with head
    original = classifier.state_dict()
    src = tmp_path / 'deit_like.pth'
    torch.save({'model': original}, src)  # DeiT/timm releases nest it so
    dst = tmp_path / 'ours.pth'
    proc = run_cli(repo_root, 'convert_timm.py', src, dst, '--from', 'timm')
    assert 'left out 2 (head.weight, ...): timm classifier head' in \
        proc.stdout

    ours_file = load(dst)
    assert ours_file['meta']['dropped'] == ['head.bias', 'head.weight']
    ours = our_vit(str(dst), prefix='')  # verified load, nothing missing
    back = keymap.mm_to_timm(ours_file['state_dict'])
    assert back.dropped == {}
    assert_same_tensors(
        back.state, {k: v for k, v in original.items()
                     if not k.startswith('head.')})

    # and the converted weights compute what timm computes
    x = torch.randn(2, 3, IMG, IMG)
    with torch.no_grad():
        diff = (ours(x)[0] - classifier.forward_features(x)).abs().max()
    print(f'\ntimm weights in ours vs timm: max abs diff {diff.item():.3g}')
    assert diff <= 1e-5


def test_ours_to_timm_to_ours_round_trip(pretrained_checkpoint):
    # the encoder as extract_backbone.py writes it (the test of (a) holds
    # them equal)
    original = {k[len('backbone.'):]: v for k, v in load(
        pretrained_checkpoint)['state_dict'].items()
        if k.startswith('backbone.')}
    there = keymap.mm_to_timm(original)
    back = keymap.timm_to_mm(there.state)
    assert there.dropped == {} and back.dropped == {}
    assert_same_tensors(back.state, original)
    # names really are timm's
    assert 'blocks.5.mlp.fc2.weight' in there.state
    assert 'patch_embed.proj.weight' in there.state
    assert 'norm.bias' in there.state


# ----------------------------------------------------- (d) official MAE
def test_official_mae_layout_round_trip(pretrained_checkpoint):
    full = load(pretrained_checkpoint)['state_dict']
    mae = keymap.mm_pretrain_to_mae(full)
    # models_mae.MaskedAutoencoderViT names
    for name in ('cls_token', 'pos_embed', 'patch_embed.proj.weight',
                 'blocks.0.norm1.weight', 'blocks.5.mlp.fc1.bias',
                 'norm.weight', 'mask_token', 'decoder_pos_embed',
                 'decoder_embed.weight', 'decoder_blocks.1.attn.qkv.bias',
                 'decoder_blocks.1.mlp.fc2.weight', 'decoder_norm.weight',
                 'decoder_pred.bias'):
        assert name in mae.state, name
    # the demo config embeds segments in the decoder: MAE has no slot
    assert sorted(mae.dropped) == ['neck.segment_embed']

    back = keymap.mae_to_mm_pretrain(mae.state)
    assert back.dropped == {}
    assert_same_tensors(
        back.state, {k: v for k, v in full.items() if k not in mae.dropped})

    # the CLI's --to mae packs it as the official releases do
    packed = converters.package(
        converters.convert(full, 'to mae'), 'to mae', 'iter_2.pth')
    assert_same_tensors(packed['model'], mae.state)
    backbone_only, _ = keymap.strip_prefix(full, 'backbone.')
    with pytest.raises(CheckpointError, match='use --to timm'):
        converters.convert(backbone_only, 'to mae')


@pytest.mark.slow
def test_from_mae_initialises_a_mixedae_run(repo_root, tmp_path):
    """A synthetic official-MAE checkpoint (timm encoder + MAE decoder)
    loads into the demo MixedAE with only MixedAE-only keys missing."""
    from mmengine.runner import load_checkpoint

    encoder = timm_vit(seed=5).state_dict()
    reference = build_mixedae(repo_root, seed=5).state_dict()
    neck = {k: v for k, v in reference.items() if k.startswith('neck.')}
    decoder = keymap.mm_pretrain_to_mae(neck).state
    assert set(decoder).isdisjoint(encoder)
    src = tmp_path / 'mae_visualize_like.pth'
    torch.save({'model': {**encoder, **decoder}}, src)

    dst = tmp_path / 'mae_as_mixedae.pth'
    run_cli(repo_root, 'convert_timm.py', src, dst, '--from', 'mae')
    converted = load(dst)['state_dict']

    model = build_mixedae(repo_root, seed=6)
    missing, unexpected = model.load_state_dict(converted, strict=False)
    assert unexpected == []
    assert missing == ['neck.segment_embed']
    assert all(
        any(re.fullmatch(p, k) for p in keymap.PRETRAIN_ONLY) for k in missing)
    state = model.state_dict()
    assert torch.equal(state['backbone.layers.2.attn.qkv.weight'],
                       encoder['blocks.2.attn.qkv.weight'])
    assert torch.equal(state['neck.ln1.weight'], neck['neck.ln1.weight'])

    # what `load_from` does, and a transfer from the same file
    load_checkpoint(build_mixedae(repo_root, seed=7), str(dst),
                    map_location='cpu', strict=False)
    our_vit(str(dst), prefix='backbone.')


# -------------------------------------------------------------- (e) publish
@pytest.mark.slow
def test_publish_model(pretrained_checkpoint, repo_root, tmp_path):
    proc = run_cli(repo_root, 'publish_model.py', pretrained_checkpoint,
                   tmp_path / 'mixedae_demo.pth')
    final = proc.stdout.strip().splitlines()[-1]
    match = re.fullmatch(r'.*/mixedae_demo-([0-9a-f]{8})\.pth', final)
    assert match, final
    with open(final, 'rb') as f:
        assert hashlib.sha256(f.read()).hexdigest()[:8] == match.group(1)
    assert os.listdir(tmp_path) == [osp.basename(final)]  # no temp left

    published = load(final)
    assert set(published) == {'state_dict', 'meta'}
    assert_same_tensors(published['state_dict'],
                        load(pretrained_checkpoint)['state_dict'])
    meta = published['meta']
    assert meta['iter'] == 2 and 'cfg' in meta
    assert 'message_hub' not in meta and 'optimizer' not in meta


# ------------------------------------------------------------ (f) errors
def test_unknown_keys_are_named_not_dropped():
    t = torch.zeros(1)
    with pytest.raises(keymap.UnmappedKeyError,
                       match='relative_position_bias_table'):
        keymap.mm_to_timm({'cls_token': t,
                           'layers.0.attn.relative_position_bias_table': t})
    with pytest.raises(keymap.UnmappedKeyError, match='dist_token'):
        keymap.timm_to_mm({'cls_token': t, 'dist_token': t})
    with pytest.raises(keymap.UnmappedKeyError,
                       match=r"start with \['backbone.'\]"):
        keymap.mm_to_timm({'backbone.cls_token': t})
    with pytest.raises(keymap.UnmappedKeyError, match='head.weight'):
        keymap.mae_to_mm_pretrain({'head.weight': t})


def test_cli_reports_unknown_key_and_writes_nothing(tmp_path, capsys):
    src = tmp_path / 'odd.pth'
    torch.save({'model': {'blocks.0.attn.q_bias': torch.zeros(3)}}, src)
    dst = tmp_path / 'out.pth'
    proc = call_tool('model_converters/convert_timm.py', src, dst, '--from',
                     'timm', capsys=capsys)
    assert proc.returncode != 0
    assert 'blocks.0.attn.q_bias' in proc.stderr
    assert 'Traceback' not in proc.stderr
    assert os.listdir(tmp_path) == ['odd.pth']


def test_pickled_objects_are_refused(tmp_path):
    src = tmp_path / 'mae_training_checkpoint.pth'
    torch.save({'model': {}, 'args': argparse.Namespace(lr=1.0)}, src)
    with pytest.raises(CheckpointError, match='argparse.Namespace'):
        read_state_dict(str(src))


# ------------------------------------------------- (g) nothing overwritten
#: every converter, with the flags it needs to get to writing
CONVERTERS = [('extract_backbone.py', []), ('convert_timm.py', ['--to', 'mae']),
              ('trust_checkpoint.py', ['--trust']), ('publish_model.py', [])]


def training_checkpoint(path):
    """A small file in the layout of a pretraining checkpoint."""
    torch.save(dict(state_dict={'backbone.cls_token': torch.zeros(1, 1, 8),
                                'neck.mask_token': torch.zeros(1, 1, 8)},
                    meta=dict(iter=2)), path)
    return path.read_bytes()


@pytest.mark.parametrize('script,flags', CONVERTERS[:3])
def test_no_converter_overwrites_its_source(tmp_path, script, flags):
    """``extract_backbone.py CKPT CKPT`` replaced a training checkpoint by
    its backbone. (publish_model.py names its output by its hash: the
    next test.)"""
    src = tmp_path / 'iter_2.pth'
    before = training_checkpoint(src)
    main = load_tool(f'model_converters/{script}').main
    with pytest.raises(SystemExit) as stop:
        main([str(src), str(src), *flags])
    assert str(stop.value.code).endswith(
        f'{src} is the input checkpoint: writing there would replace it; '
        'give another output name (or --overwrite to replace it)')
    assert src.read_bytes() == before
    assert os.listdir(tmp_path) == ['iter_2.pth']  # no temporary file left


@pytest.mark.parametrize('script,flags', CONVERTERS)
def test_no_converter_overwrites_the_checkpoint_a_run_resumes_from(
        tmp_path, script, flags):
    run = tmp_path / 'work_dir'
    run.mkdir()
    src = tmp_path / 'other.pth'
    training_checkpoint(src)
    main = load_tool(f'model_converters/{script}').main
    if script == 'publish_model.py':
        # it names the file by its content's hash: the name the same
        # output had before
        main([str(src), str(run / 'published.pth')])
        resumed, = run.iterdir()
        dst = run / 'published.pth'
        before = training_checkpoint(resumed)
    else:
        resumed = dst = run / 'iter_2.pth'
        before = training_checkpoint(resumed)
    (run / 'last_checkpoint').write_text(str(resumed))
    with pytest.raises(SystemExit) as stop:
        main([str(src), str(dst), *flags])
    assert str(stop.value.code).endswith(
        f'{resumed} is the checkpoint that {run}/last_checkpoint names, '
        'which --resume continues from: give another output name (or '
        '--overwrite to replace it)')
    assert resumed.read_bytes() == before
    assert sorted(os.listdir(run)) == sorted([resumed.name,
                                              'last_checkpoint'])
    # asked for, it is replaced
    assert main([str(src), str(dst), *flags, '--overwrite']) == 0
    assert resumed.read_bytes() != before


def test_extract_backbone_onto_its_source_is_one_line(tmp_path, capsys):
    src = tmp_path / 'iter_2.pth'
    before = training_checkpoint(src)
    proc = call_tool('model_converters/extract_backbone.py', src, src,
                     capsys=capsys)
    assert proc.returncode == 1
    assert proc.stderr == (
        f'extract_backbone.py: error: {src} is the input checkpoint: '
        'writing there would replace it; give another output name (or '
        '--overwrite to replace it)\n')
    assert src.read_bytes() == before
