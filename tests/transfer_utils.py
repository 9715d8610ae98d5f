"""What the transfer tests share: verified-load assertion and the
``tools/train.py`` / ``tools/test.py`` runners."""
import contextlib
import io
import os.path as osp
import re

import pytest

import torch
from mmengine.config import Config
from mmengine.registry import DefaultScope

from mixedae_mm import downstream


def build_model(config, overrides):
    """Build and initialise (load pretrained weights) a transfer config's
    model in its own codebase's registry."""
    cfg = Config.fromfile(config)
    cfg.merge_from_dict(overrides)
    model = downstream.build_model(cfg.model, cfg.default_scope)
    with DefaultScope.overwrite_default_scope(cfg.default_scope):
        model.init_weights()
    return model


def assert_backbone_equals_pretrained(backbone, checkpoint, prefix='backbone.'):
    """Every encoder tensor of ``checkpoint`` equals ``backbone``'s, bit for
    bit; returns how many were compared.

    Tensors a transfer model drops by design are skipped: the pretraining-only
    segment embedding, and the final norm of backbones built without one.
    """
    pretrained = torch.load(checkpoint, map_location='cpu',
                            weights_only=True)['state_dict']
    own = backbone.state_dict()
    compared = 0
    for key, value in pretrained.items():
        if not key.startswith(prefix):
            continue
        name = key[len(prefix):]
        if name == 'segment_embed':
            continue
        if name.startswith('ln1.') and not backbone.final_norm:
            continue
        assert name in own, f'{name} of the checkpoint is not in the model'
        torch.testing.assert_close(own[name], value, rtol=0, atol=0,
                                   msg=name)
        compared += 1
    # the demo encoder: patch embed (2) + cls + pos, 12 tensors per layer
    assert compared >= 4 + 12 * backbone.num_layers
    return compared


def _run(repo_root, tool, args, work_dir, overrides):
    """``tools/<tool>.py``'s ``main`` in this process (what the transfer
    tests check is the tool's work, not a new interpreter's start), with
    ``--cfg-options``; returns what it printed before mmengine's logger
    existed, then its log."""
    from conftest import load_tool
    config, *rest = args
    argv = [osp.join(repo_root, config), *rest, '--work-dir', str(work_dir),
            '--cfg-options'] + [f'{k}={v}' for k, v in overrides.items()]
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out):
            load_tool(f'{tool}.py').main(argv)
    except SystemExit as stopped:
        pytest.fail(f'{tool}.py stopped: {stopped}\n{out.getvalue()[-4000:]}')
    logs = sorted(work_dir.glob('*/*.log'))
    assert logs, f'no log in {work_dir}'
    # what the tool prints before mmengine's logger exists, then the log
    printed = [line for line in out.getvalue().splitlines()
               if not re.match(r'\d{2}/\d{2} \d{2}:\d{2}:\d{2} - ', line)]
    return '\n'.join(printed) + '\n' + logs[-1].read_text()


def train(repo_root, config, work_dir, overrides):
    """Run ``tools/train.py config`` with ``--cfg-options``; return what it
    printed before logging started (e.g. the fp32-on-CPU note), then its
    log."""
    return _run(repo_root, 'train', [config], work_dir, overrides)


def evaluate(repo_root, config, train_dir, overrides):
    """Run ``tools/test.py`` on the last checkpoint ``train`` saved in
    ``train_dir`` (loaded with ``weights_only=True``); return its log."""
    checkpoint = (train_dir / 'last_checkpoint').read_text().strip()
    return _run(repo_root, 'test', [config, checkpoint],
                train_dir / 'test', overrides)


def assert_cpu_fp32_and_scaled_lr(log, recipe_lr, batch, recipe_batch):
    """A shipped GPU recipe run on this CPU by ``tools/train.py`` with a
    per-GPU batch of ``batch`` on one process: its bf16 ``AmpOptimWrapper``
    became fp32 (with a note), and the lr actually used is the recipe's
    scaled linearly to the real batch, reported with a warning."""
    import torch
    if not torch.cuda.is_available():
        assert 'running this config in fp32 on the CPU' in log
    report = re.search(
        r'total batch (\d+) \(1 GPU\(s\) x (\d+)\), lr ([-+.e\d]+); '
        r'recipe: batch (\d+), lr ([-+.e\d]+)', log)
    assert report, 'no batch/lr report in the log'
    assert int(report[1]) == int(report[2]) == batch
    assert int(report[4]) == recipe_batch
    assert float(report[5]) == pytest.approx(recipe_lr, rel=1e-3)
    assert float(report[3]) == pytest.approx(
        recipe_lr * batch / recipe_batch, rel=1e-3)
    assert (f"total batch {batch} differs from the recipe's {recipe_batch}: "
            'lr scaled linearly') in log
