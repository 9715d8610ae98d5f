"""Pretrain -> extract -> every downstream model: no silent partial load.

The pretraining checkpoint is the demo config trained for 2 iterations
(``pretrained_checkpoint``); its backbone is extracted with the published
tool and loaded (``prefix=''``) into the ImageNet classifier (mmpretrain),
the UperNet segmentor (mmseg) and the Mask R-CNN detector (mmdet), each built
from its real transfer config with tiny overrides.
"""
import os.path as osp

import pytest
import torch

from builders import (CLS_FINETUNE, DET_LONG, SEG_CONFIG, cls_overrides,
                      det_overrides, seg_overrides)
from transfer_utils import assert_backbone_equals_pretrained, build_model

pytest.importorskip('mmseg')
pytest.importorskip('mmdet')

DOWNSTREAM = {
    'mmpretrain fine-tune': (CLS_FINETUNE,
                             lambda ckpt: cls_overrides(
                                 CLS_FINETUNE, ckpt, 'unused')),
    'mmseg UperNet': (SEG_CONFIG,
                      lambda ckpt: seg_overrides(ckpt, 'unused')),
    'mmdet Mask R-CNN': (DET_LONG,
                         lambda ckpt: det_overrides(ckpt, 'unused')),
}


@pytest.fixture(scope='module')
def extracted(repo_root, pretrained_checkpoint, tmp_path_factory):
    from conftest import load_tool
    out = str(tmp_path_factory.mktemp('extracted') / 'backbone.pth')
    # the published tool, in this process (tests/test_converters.py starts
    # it as a command)
    assert load_tool('model_converters/extract_backbone.py').main(
        [pretrained_checkpoint, out]) == 0
    state = torch.load(out, weights_only=True)['state_dict']
    assert not any(k.startswith(('backbone.', 'neck.', 'head.'))
                   for k in state)
    return out


@pytest.mark.parametrize('downstream', list(DOWNSTREAM))
def test_extracted_backbone_loads_completely(repo_root, pretrained_checkpoint,
                                             extracted, downstream):
    config, overrides = DOWNSTREAM[downstream]
    overrides = overrides(extracted)
    overrides['model.backbone.init_cfg.prefix'] = ''
    model = build_model(osp.join(repo_root, config), overrides)
    # compared with the pretraining checkpoint itself, not the extract
    assert_backbone_equals_pretrained(model.backbone, pretrained_checkpoint)
