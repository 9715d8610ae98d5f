"""The study's fine-tune uses the recipes' layer-decay rule, and on the
study's encoders that rule gives the groups of the committed results."""
import os.path as osp

import pytest

from mixedae_mm.engine.optim import ViTLayerDecayOptimWrapperConstructor
from mixedae_mm.evaluation.probes import MeanPoolClassifier, layer_decay_groups
from mixedae_mm.evaluation.study import ARMS, build_model

LR, DECAY, WD = 1e-3, 0.75, 0.05  # probes.fine_tune's defaults


def committed_study_groups(backbone, head):
    """The rule the study's committed fine-tunes ran with (a54e4bd's
    ``probes.layer_decay_groups``), kept verbatim as the reference:
    ``[(lr_scale, weight_decay, [param, ...]), ...]`` in group order."""
    num_layers = len(backbone.layers)
    groups = {}

    def add(name, param, layer):
        no_decay = param.ndim == 1 or name.endswith(('cls_token',
                                                     'pos_embed'))
        group = groups.setdefault((layer, no_decay), (
            DECAY**(num_layers + 1 - layer), 0. if no_decay else WD, []))
        group[2].append(param)

    for name, param in backbone.named_parameters():
        if not param.requires_grad:
            continue
        if name.startswith('layers.'):
            layer = int(name.split('.')[1]) + 1
        elif name.startswith(('patch_embed', 'cls_token', 'pos_embed')):
            layer = 0
        else:
            layer = num_layers + 1
        add(name, param, layer)
    for name, param in head.named_parameters():
        add(name, param, num_layers + 1)
    return list(groups.values())


def _ids(params):
    return [id(p) for p in params]


@pytest.mark.parametrize('arm', [a for a, c in ARMS.items() if c])
def test_the_study_fine_tunes_with_the_groups_of_its_committed_results(
        repo_root, arm):
    model, _ = build_model(osp.join(repo_root, ARMS[arm]))
    classifier = MeanPoolClassifier(model.backbone, num_classes=10)
    groups = layer_decay_groups(model.backbone, classifier.head, LR, DECAY,
                                WD)
    expected = committed_study_groups(model.backbone, classifier.head)
    assert [(g['lr_scale'], g['weight_decay'], _ids(g['params']))
            for g in groups] == [(s, wd, _ids(ps)) for s, wd, ps in expected]
    for group in groups:
        assert group['lr'] == LR * group['lr_scale']

    # and these are the recipes' groups (the constructor sorts them)
    constructor = ViTLayerDecayOptimWrapperConstructor(
        dict(optimizer=dict(type='AdamW', lr=LR, weight_decay=WD)),
        paramwise_cfg=dict(layer_decay_rate=DECAY))
    recipe = constructor(classifier).optimizer.param_groups

    def by_param(param_groups):
        return {id(p): (g['lr'], g['weight_decay'])
                for g in param_groups for p in g['params']}

    assert by_param(recipe) == by_param(groups)

