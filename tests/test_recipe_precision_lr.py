"""Every shipped GPU recipe: bf16 AMP, TF32 for what stays fp32, and an lr
scaled to the real total batch, reported at start-up."""
import glob
import logging
import os.path as osp
from types import SimpleNamespace

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import DefaultScope

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
#: every recipe meant for GPUs (the demo is a CPU config)
GPU_RECIPES = sorted(
    osp.relpath(p, ROOT)
    for pattern in ('configs/*.py', 'configs/finetune/*.py',
                    'configs/seg/*.py', 'configs/det/*.py')
    for p in glob.glob(osp.join(ROOT, pattern)))


def test_the_recipes_are_all_found():
    assert len(GPU_RECIPES) >= 12
    assert 'configs/finetune/mixedae_vitl_ft-50e_in1k.py' in GPU_RECIPES


@pytest.mark.parametrize('config', GPU_RECIPES)
def test_recipe_trains_in_bf16_with_tf32_and_a_scaled_lr(config):
    cfg = Config.fromfile(osp.join(ROOT, config))
    assert cfg.optim_wrapper.type == 'AmpOptimWrapper'
    assert cfg.optim_wrapper.dtype == 'bfloat16'
    assert 'loss_scale' not in cfg.optim_wrapper  # bf16 needs none
    assert cfg.get('fp16') is None  # nothing half-configured for fp16
    hooks = [h.type for h in cfg.custom_hooks]
    for hook in ('TF32Hook', 'BatchLRReportHook', 'StepSeedHook',
                 'PreemptionHook'):
        assert hooks.count(hook) == 1, hook
    # durable, weights-only loadable checkpoints
    assert cfg.default_hooks.checkpoint.type == 'DurableCheckpointHook'
    hooks.append(cfg.default_hooks.checkpoint.type)
    # the recipe's hooks exist in its own codebase's registry
    registry = __import__(f'{cfg.default_scope}.registry',
                          fromlist=['HOOKS']).HOOKS
    with DefaultScope.overwrite_default_scope(cfg.default_scope):
        for hook in hooks:
            assert registry.get(hook) is not None, hook
    assert cfg.auto_scale_lr.enable is True
    assert cfg.auto_scale_lr.base_batch_size > 0


@pytest.fixture
def restore_tf32():
    saved = (torch.backends.cuda.matmul.allow_tf32,
             torch.backends.cudnn.allow_tf32)
    yield
    (torch.backends.cuda.matmul.allow_tf32,
     torch.backends.cudnn.allow_tf32) = saved


def _runner():
    return SimpleNamespace(logger=logging.getLogger('test_tf32'))


@pytest.mark.parametrize('scope', ['mmpretrain', 'mmseg', 'mmdet'])
def test_tf32_hook_turns_tf32_on_with_cuda_and_restores(
        scope, monkeypatch, restore_tf32):
    import importlib
    importlib.import_module({'mmpretrain': 'mixedae_mm',
                             'mmseg': 'mixedae_mm.downstream.mmseg',
                             'mmdet': 'mixedae_mm.downstream.mmdet'}[scope])
    hooks = importlib.import_module(f'{scope}.registry').HOOKS
    with DefaultScope.overwrite_default_scope(scope):
        hook = hooks.build(dict(type='TF32Hook'))
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    hook.before_run(_runner())
    assert torch.backends.cuda.matmul.allow_tf32
    assert torch.backends.cudnn.allow_tf32
    hook.after_run(_runner())
    assert not torch.backends.cuda.matmul.allow_tf32
    assert not torch.backends.cudnn.allow_tf32


def test_tf32_hook_changes_nothing_without_cuda(monkeypatch, restore_tf32):
    from mixedae_mm.engine import TF32Hook
    torch.backends.cuda.matmul.allow_tf32 = False
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    hook = TF32Hook()
    hook.before_run(_runner())
    assert not torch.backends.cuda.matmul.allow_tf32
    hook.after_run(_runner())
    assert not torch.backends.cuda.matmul.allow_tf32


def test_batch_lr_report_warns_when_scaling_is_disabled(caplog):
    """The report reads the optimizer the run really uses: with
    auto_scale_lr disabled the lr stays the recipe's, and the warning says
    how to scale it."""
    from mixedae_mm.engine import BatchLRReportHook
    cfg = Config.fromfile(
        osp.join(ROOT, 'configs/finetune/mixedae_vitb_ft-100e_in1k.py'))
    cfg.auto_scale_lr.enable = False
    cfg.train_dataloader.batch_size = 64
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))],
                                  lr=cfg.optim_wrapper.optimizer.lr)
    runner = SimpleNamespace(
        cfg=cfg, world_size=2, auto_scale_lr=cfg.auto_scale_lr,
        optim_wrapper=SimpleNamespace(optimizer=optimizer),
        logger=logging.getLogger('test_batch_lr'))
    with caplog.at_level(logging.INFO, logger='test_batch_lr'):
        BatchLRReportHook().before_train(runner)
    text = caplog.text
    assert ('total batch 128 (2 GPU(s) x 64), lr 0.002; recipe: batch 1024, '
            'lr 0.002') in text
    assert "total batch 128 differs from the recipe's 1024" in text
    assert 'auto_scale_lr is disabled' in text
    assert 'auto_scale_lr.enable=True' in text


@pytest.mark.parametrize('bf16', [True, False])
def test_train_tool_keeps_bf16_or_falls_back_to_fp16_on_a_gpu(
        monkeypatch, bf16):
    """tools/train.py on a (simulated) GPU with the shipped ViT-B recipe:
    its bf16 AMP as written, or fp16 with a dynamic loss scale where the GPU
    has no bf16."""
    from conftest import load_tool
    tool = load_tool('train.py')
    cfg = Config.fromfile(osp.join(ROOT, 'configs/mixedae_vitb_1600e.py'))
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    monkeypatch.setattr(torch.cuda, 'is_bf16_supported', lambda: bf16)
    tool.configure_amp(cfg, amp_flag=False)
    assert cfg.optim_wrapper.type == 'AmpOptimWrapper'
    if bf16:
        assert cfg.optim_wrapper.dtype == 'bfloat16'
        assert 'loss_scale' not in cfg.optim_wrapper
    else:
        assert cfg.optim_wrapper.dtype == 'float16'
        assert cfg.optim_wrapper.loss_scale == 'dynamic'
