"""Issue 21: a checkpoint that does not fit the model is refused on every
path that loads weights for use (``get_model``, the inferencers, the
tools), with one message naming the keys; keys left out on purpose are
reported, not refused."""
import glob
import logging
import os.path as osp
import re

import pytest
import torch
from mmengine.config import Config

from conftest import call_tool, run_python

from builders import (CLS_FINETUNE, cls_overrides, det_overrides,
                      seg_overrides, tiny_imagenet)

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
VITB = 'configs/mixedae_vitb_1600e.py'
#: what the demo checkpoint (192 wide, 6 layers, patch 8) gives a ViT-B
VITB_MISMATCH = (r"iter_2\.pth does not match MixedAE: missing "
                 r"\['backbone\.layers\.6\..*shapes differ "
                 r"\['backbone\.cls_token': checkpoint \(1, 1, 192\), "
                 r"model \(1, 1, 768\)")


class _Lines(logging.Handler):

    def __init__(self):
        super().__init__()
        self.lines = []

    def emit(self, record):
        self.lines.append(record.getMessage())


def test_get_model_refuses_a_checkpoint_of_another_architecture(
        pretrained_checkpoint):
    import mixedae_mm  # noqa: F401
    from mmpretrain import get_model

    from mixedae_mm.checkpoint_io import CheckpointMismatchError
    with pytest.raises(CheckpointMismatchError, match=VITB_MISMATCH) as info:
        get_model('mixedae_vitb_1600e', pretrained=pretrained_checkpoint)
    message = str(info.value)
    assert '\n' not in message and '(111 in all)' in message
    assert 'Check that the config builds the model' in message
    # a caller that asks for a partial load itself still gets one
    from mmengine.runner import load_checkpoint
    load_checkpoint(get_model('mixedae_vitb_1600e'), pretrained_checkpoint,
                    map_location='cpu', strict=False)


def test_inferencers_refuse_it_by_name_and_given_a_model(
        pretrained_checkpoint):
    """FeatureExtractor builds by name through get_model, and loads into a
    built model through its own binding of mmengine's load_checkpoint."""
    import mixedae_mm  # noqa: F401
    from mmpretrain import FeatureExtractor, get_model

    from mixedae_mm.checkpoint_io import CheckpointMismatchError
    with pytest.raises(CheckpointMismatchError, match=VITB_MISMATCH):
        FeatureExtractor('mixedae_vitb_1600e',
                         pretrained=pretrained_checkpoint, device='cpu')
    with pytest.raises(CheckpointMismatchError, match=VITB_MISMATCH):
        FeatureExtractor(get_model('mixedae_vitb_1600e'),
                         pretrained=pretrained_checkpoint, device='cpu')


def test_other_models_load_as_mmengine_loads_them(pretrained_checkpoint):
    """Only models holding a mixedae_mm module are loaded strictly: an
    mmpretrain ResNet given our checkpoint still gets mmengine's lenient
    load (a warning, nothing loaded)."""
    import mixedae_mm  # noqa: F401
    from mmengine.runner import load_checkpoint
    from mmpretrain.registry import MODELS
    resnet = MODELS.build(dict(type='ImageClassifier',
                               backbone=dict(type='ResNet', depth=18)))
    before = {k: v.clone() for k, v in resnet.state_dict().items()}
    load_checkpoint(resnet, pretrained_checkpoint, map_location='cpu')
    for key, value in resnet.state_dict().items():
        assert torch.equal(value, before[key]), key


@pytest.mark.parametrize('codebase', ['mmseg', 'mmdet'])
def test_seg_and_det_inferencers_refuse_a_pretraining_checkpoint(
        codebase, pretrained_checkpoint):
    """A pretraining checkpoint given as ``weights`` of a segmentor or
    detector holds no decode head / RPN: refused, not drawn at random."""
    pytest.importorskip(codebase)
    import mixedae_mm  # noqa: F401
    from mixedae_mm.checkpoint_io import CheckpointMismatchError
    if codebase == 'mmseg':
        from mmseg.apis import MMSegInferencer as Inferencer
        overrides_of = seg_overrides
        config = 'configs/seg/mixedae_vitb_upernet-160k_ade20k-512.py'
        kind = 'EncoderDecoder'
    else:
        from mmdet.apis import DetInferencer as Inferencer
        overrides_of = det_overrides
        config = 'configs/det/mixedae_vitb_mask-rcnn_simplefpn-lsj-1x_coco.py'
        kind = 'MaskRCNN'
    cfg = Config.fromfile(osp.join(ROOT, config))
    cfg.merge_from_dict({k: v for k, v in overrides_of(None, '').items()
                         if k.startswith('model.') and 'init_cfg' not in k})
    with pytest.raises(CheckpointMismatchError,
                       match=rf"the checkpoint given does not match {kind}: "
                       r"missing \['.*unexpected \[.*'neck\.mask_token'"):
        Inferencer(cfg, weights=pretrained_checkpoint, device='cpu')


def _assert_refused(result, model='MixedAE'):
    assert result.returncode == 1, result.stdout[-2000:]
    last = result.stderr.strip().splitlines()[-1]
    # 'error: ...' or, like train.py's, 'test.py: error: ...'
    assert re.match(r'(\S+\.py: )?error: ', last), last
    assert f'does not match {model}' in last
    assert 'Traceback' not in result.stderr


@pytest.mark.parametrize('tool', ['vis_reconstruction.py',
                                  'vis_homologous_attention.py'])
def test_picture_tools_refuse_a_checkpoint_of_another_architecture(
        tool, pretrained_checkpoint, demo_data, tmp_path, capsys):
    images = sorted(glob.glob(osp.join(demo_data, 'train', '**', '*.*'),
                              recursive=True))[:4]
    out = tmp_path / 'out'
    result = call_tool(f'visualization/{tool}', VITB, pretrained_checkpoint,
                       *images, '--out', str(out), capsys=capsys)
    _assert_refused(result)
    assert not glob.glob(str(out / '*.png'))


def test_knn_eval_refuses_a_checkpoint_of_another_architecture(
        pretrained_checkpoint, tmp_path, capsys):
    data = tiny_imagenet(str(tmp_path / 'imagenet'), per_class=2, classes=2)
    result = call_tool('analysis_tools/knn_eval.py', VITB,
                       pretrained_checkpoint, '--data-root', data, '--k', '1',
                       '--batch-size', '4', '--num-workers', '0', '--device',
                       'cpu', capsys=capsys)
    _assert_refused(result)


def test_test_tool_refuses_a_checkpoint_of_another_model(
        pretrained_checkpoint, tmp_path, capsys):
    """A pretraining checkpoint is no classifier: tools/test.py used to
    evaluate the random head it left."""
    data = tiny_imagenet(str(tmp_path / 'imagenet'), per_class=2, classes=2)
    overrides = cls_overrides(CLS_FINETUNE, pretrained_checkpoint, data)
    overrides.update({
        'test_dataloader.dataset.pipeline.1.scale': 73,
        'test_dataloader.dataset.pipeline.2.crop_size': 64,
        'test_dataloader.batch_size': 4,
        'test_dataloader.num_workers': 0,
        'test_dataloader.persistent_workers': False})
    result = call_tool('test.py', CLS_FINETUNE, pretrained_checkpoint,
                       '--work-dir', str(tmp_path / 'work'), '--cfg-options',
                       *(f'{k}={v}' for k, v in overrides.items()),
                       capsys=capsys)
    _assert_refused(result, model='ImageClassifier')
    assert "unexpected ['neck.mask_token'" in result.stderr


def test_a_pretrained_encoder_loads_strictly_and_names_what_it_skips(
        pretrained_checkpoint):
    """What a study tool calls: the encoder of a pretraining checkpoint into
    a MixedAEViT, or into a whole classifier with the pretraining neck/head
    named as unused; either way every tensor is checked and the skipped
    keys are reported and logged."""
    from mmengine.logging import MMLogger

    import mixedae_mm  # noqa: F401
    from mixedae_mm.checkpoint_io import load_checkpoint_strict
    from mixedae_mm import downstream
    from mixedae_mm.models import MixedAEViT
    saved = torch.load(pretrained_checkpoint, weights_only=True)['state_dict']
    heads = sorted(k for k in saved if k.startswith(('neck.', 'head.')))

    encoder = MixedAEViT(arch='demo-tiny', img_size=64, patch_size=8,
                         mixing=False)
    logger, lines = MMLogger.get_current_instance(), _Lines()
    logger.addHandler(lines)
    try:
        report = load_checkpoint_strict(
            encoder, pretrained_checkpoint, prefix='backbone.',
            expect_missing=MixedAEViT.NEW_IN_TRANSFER,
            expect_unused=MixedAEViT.UNUSED_IN_TRANSFER, logger=logger)
    finally:
        logger.removeHandler(lines)
    assert sorted(report['outside_prefix']) == heads
    assert report['new'] == [] and report['unused'] == []
    for key, value in encoder.state_dict().items():
        assert torch.equal(value, saved[f'backbone.{key}']), key
    # the pretraining head has no tensors: the decoder (neck) is all
    assert all(k.startswith('neck.') for k in heads)
    assert any(f'outside the prefix, skipped: neck.* ({len(heads)})' in line
               for line in lines.lines), lines.lines

    cfg = Config.fromfile(osp.join(ROOT, CLS_FINETUNE))
    cfg.merge_from_dict({k: v for k, v in cls_overrides(CLS_FINETUNE, '',
                                                         '').items()
                         if k.startswith('model.') and 'init_cfg' not in k})
    classifier = downstream.build_model(cfg.model, cfg.default_scope)
    report = load_checkpoint_strict(
        classifier, pretrained_checkpoint,
        expect_missing=(r'head\..*', r'backbone\.ln2\..*'),
        expect_unused=(r'neck\..*', r'head\..*', r'backbone\.ln1\..*'))
    assert report['new'] == sorted(k for k in classifier.state_dict()
                                   if k.startswith(('head.',
                                                    'backbone.ln2.')))
    assert [k for k in report['unused'] if not k.startswith(
        'backbone.ln1.')] == heads
    for key in report['loaded']:
        assert torch.equal(classifier.state_dict()[key], saved[key]), key


def test_the_backbone_names_a_shape_mismatch(tmp_path):
    """MixedAEViT.load_pretrained used to let torch's multi-line size
    mismatch through; it now says which tensors differ, on one line."""
    from mixedae_mm.checkpoint_io import CheckpointMismatchError
    from mixedae_mm.models import MixedAEViT
    source = MixedAEViT(arch='demo-tiny', img_size=64, patch_size=16,
                        mixing=False)
    path = tmp_path / 'p16.pth'
    torch.save({'state_dict': source.state_dict()}, path)
    target = MixedAEViT(arch='demo-tiny', img_size=64, patch_size=8,
                        mixing=False)
    with pytest.raises(
            CheckpointMismatchError,
            match=r"p16\.pth does not match MixedAEViT: missing \[\], "
            r"unexpected \[\], shapes differ "
            r"\['patch_embed\.projection\.weight': checkpoint "
            r"\(192, 3, 16, 16\), model \(192, 3, 8, 8\)") as info:
        target.load_pretrained(str(path))
    assert '\n' not in str(info.value)
    assert isinstance(info.value, RuntimeError)  # as load_pretrained raised


@pytest.mark.slow
def test_inferencers_imported_after_the_package_load_strictly_too():
    """mmseg's and mmdet's inferencer modules imported after ``import
    mixedae_mm`` and its downstream modules (as in a long session) bind the
    strict loader: the test above failed in the full suite for want of it."""
    code = (
        'import mixedae_mm, mixedae_mm.downstream.mmseg, '
        'mixedae_mm.downstream.mmdet\n'
        'import mmseg.apis.mmseg_inferencer as s, '
        'mmdet.apis.det_inferencer as d\n'
        'print(s._load_checkpoint_to_model.strict_for_mixedae_mm, '
        'd._load_checkpoint_to_model.strict_for_mixedae_mm)\n')
    result = run_python('-c', code, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split()[-2:] == ['True', 'True']
