"""FSDP through mmengine's FlexibleRunner (docs/scale.md, "FSDP"): the demo
config with the FSDP strategy given on the command line, two processes on
the CPU (gloo), trains, saves, resumes, and its checkpoint goes through
extract_backbone.py into the fine-tune classifier, every tensor equal."""
import os
import os.path as osp
import re
import subprocess
import sys

import pytest
import torch
from mmengine.config import Config

from conftest import IN_PROCESS_LOADING, call_tool, load_tool
from builders import CLS_FINETUNE, cls_overrides
from transfer_utils import assert_backbone_equals_pretrained, build_model

DEMO = 'configs/demo/mixedae_vit-tiny-p8_demo.py'
#: what docs/scale.md tells a user to add to any pretraining command
FSDP_OPTIONS = [
    'runner_type=FlexibleRunner', 'strategy.type=FSDPStrategy',
    'strategy.model_wrapper.auto_wrap_policy.type='
    'mixedae_mm.engine.fsdp.encoder_layer_wrap_policy',
]


def _fsdp_demo_run(repo_root, data, work_dir, iters, *args):
    options = FSDP_OPTIONS + [
        f'train_dataloader.dataset.data_root={data}',
        'train_dataloader.batch_size=4', *IN_PROCESS_LOADING,
        f'train_cfg.max_iters={iters}', 'default_hooks.checkpoint.interval=2',
        'default_hooks.logger.interval=1',
        # ReconstructionVisualizationHook: pictures need the full weights
        'custom_hooks.4.interval=2',
    ]
    # no PORT: dist_train.sh runs torchrun --standalone on a free port
    env = dict(os.environ, OMP_NUM_THREADS='1')
    env.pop('PORT', None)
    result = subprocess.run(
        ['bash', 'tools/dist_train.sh', DEMO, '2', '--work-dir',
         str(work_dir), *args, '--cfg-options', *options],
        cwd=repo_root, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, (result.stdout[-3000:] +
                                    result.stderr[-5000:])
    return result.stdout + result.stderr


@pytest.mark.slow
def test_fsdp_demo_trains_resumes_and_transfers(repo_root, demo_data,
                                                tmp_path):
    work = tmp_path / 'work'
    out = _fsdp_demo_run(repo_root, demo_data, work, 2)
    assert 'MixedAEFSDPStrategy' in out
    assert (work / 'iter_2.pth').is_file()
    assert list(work.glob('*/vis_data/vis_image/reconstruction_group0_2.png'))
    first = torch.load(work / 'iter_2.pth', weights_only=True)
    # full (unsharded) state: the keys of a run without FSDP
    assert not any('_fsdp' in k or 'flat_param' in k
                   for k in first['state_dict'])
    assert first['state_dict']['backbone.pos_embed'].shape == (1, 65, 192)

    out = _fsdp_demo_run(repo_root, demo_data, work, 3,
                         '--resume')
    assert 'resumed epoch: 0, iter: 2' in out
    assert re.search(r'Iter\(train\) \[3/3\]', out)
    assert open(work / 'last_checkpoint').read().strip().endswith(
        'iter_3.pth')
    second = torch.load(work / 'iter_3.pth', weights_only=True)
    moved = [k for k, v in second['state_dict'].items()
             if not torch.equal(v, first['state_dict'][k])]
    assert moved, 'the resumed iteration did not train'

    backbone = tmp_path / 'backbone.pth'
    result = subprocess.run(
        [sys.executable, 'tools/model_converters/extract_backbone.py',
         str(work / 'iter_3.pth'), str(backbone)],
        cwd=repo_root, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    overrides = cls_overrides(CLS_FINETUNE, str(backbone), str(tmp_path))
    overrides['model.backbone.init_cfg.prefix'] = ''  # extracted: no prefix
    model = build_model(osp.join(repo_root, CLS_FINETUNE), overrides)
    # every tensor of the FSDP checkpoint's encoder, bit for bit
    assert_backbone_equals_pretrained(model.backbone, str(work / 'iter_3.pth'))


@pytest.mark.parametrize('name', ['mixedae_vitl_1600e_fsdp.py',
                                  'mixedae_vith-p14_1600e_fsdp.py'])
def test_fsdp_configs_are_their_recipe_plus_the_strategy(repo_root, name):
    path = osp.join(repo_root, 'configs/fsdp', name)
    recipe_path = osp.join(repo_root, 'configs', name.replace('_fsdp', ''))
    # every FSDP config is a shipped recipe plus the strategy: a recipe
    # missing from the checkout is a failure, not a reason to skip
    assert osp.exists(recipe_path), f'{recipe_path} is missing'
    cfg, recipe = Config.fromfile(path), Config.fromfile(recipe_path)
    assert cfg.runner_type == 'FlexibleRunner'
    assert cfg.strategy.type == 'MixedAEFSDPStrategy'
    assert cfg.strategy.state_dict_cfg == 'full'
    assert cfg.strategy.model_wrapper.mixed_precision.param_dtype == \
        'bfloat16'
    # FSDP casts: a plain optim wrapper with the recipe's optimizer
    assert cfg.optim_wrapper.type == 'OptimWrapper'
    assert 'dtype' not in cfg.optim_wrapper
    assert cfg.optim_wrapper.optimizer == recipe.optim_wrapper.optimizer
    assert cfg.optim_wrapper.paramwise_cfg == recipe.optim_wrapper.paramwise_cfg
    for key in ('model', 'param_scheduler', 'train_cfg', 'train_dataloader',
                'auto_scale_lr', 'custom_hooks', 'default_hooks'):
        assert cfg[key] == recipe[key], key


def test_wrap_policy_makes_every_transformer_layer_a_unit(repo_root):
    """Whole encoder and decoder layers are the FSDP units (a unit's
    weights are gathered by its forward: the encoder calls each layer's)."""
    from mmengine.registry import FUNCTIONS
    from mmpretrain.models.backbones.vision_transformer import \
        TransformerEncoderLayer
    from mmpretrain.registry import MODELS

    import mixedae_mm  # noqa: F401
    from mixedae_mm.models.backbones import MixedAEEncoderLayer
    cfg = Config.fromfile(osp.join(repo_root, DEMO))
    model = MODELS.build(cfg.model)
    with FUNCTIONS.switch_scope_and_registry(None):
        policy = FUNCTIONS.get(
            FSDP_OPTIONS[2].split('=')[1])
    wrapped = [name for name, m in model.named_modules()
               if policy(m, recurse=False, nonwrapped_numel=0)]
    encoder = [f'backbone.layers.{i}' for i in range(6)]  # demo: 6 layers
    decoder = [f'neck.decoder_blocks.{i}'
               for i in range(cfg.model.neck.decoder_depth)]
    assert wrapped == encoder + decoder
    assert all(isinstance(model.get_submodule(n), MixedAEEncoderLayer)
               for n in encoder)
    assert all(isinstance(model.get_submodule(n), TransformerEncoderLayer)
               for n in decoder)


def test_sharded_checkpoint_folder_is_refused_by_name(tmp_path, capsys):
    folder = tmp_path / 'iter_2.pth'
    folder.mkdir()
    torch.save({'state_dict': {}}, folder / 'rank0.pth')
    result = call_tool('model_converters/extract_backbone.py', folder,
                       tmp_path / 'out.pth', capsys=capsys)
    assert result.returncode != 0
    assert "state_dict_cfg='full'" in result.stderr
    assert 'per-rank FSDP shards' in result.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason='the CPU fallback')
def test_fsdp_recipe_runs_fp32_on_a_cpu_and_refuses_amp(repo_root, capsys):
    """docs/troubleshooting.md: on a machine without GPU the shipped FSDP
    recipe drops FSDP mixed precision and says so; --amp is an error."""
    tool = load_tool('train.py')
    path = osp.join(repo_root, 'configs/fsdp/mixedae_vitl_1600e_fsdp.py')
    cfg = Config.fromfile(path)
    tool.configure_amp(cfg, amp_flag=False)
    assert ('FSDP mixed precision needs a GPU: running this config in fp32 '
            'on the CPU') in capsys.readouterr().out
    assert 'mixed_precision' not in cfg.strategy.model_wrapper
    assert cfg.optim_wrapper.type == 'OptimWrapper'
    with pytest.raises(SystemExit, match='--amp needs a CUDA GPU'):
        tool.configure_amp(Config.fromfile(path), amp_flag=True)


def test_local_state_dict_is_refused_at_start_up():
    """docs/troubleshooting.md: sharded ('local') FSDP checkpoints are
    refused when the strategy is built, naming the setting to change."""
    from mixedae_mm.engine import MixedAEFSDPStrategy
    with pytest.raises(ValueError, match="state_dict_cfg='local'.*only full "
                       "checkpoints are supported"):
        MixedAEFSDPStrategy(state_dict_cfg='local')


@pytest.mark.parametrize('bf16', [True, False])
def test_fsdp_precision_on_a_gpu_when_the_strategy_names_no_wrapper(
        repo_root, monkeypatch, bf16):
    """--amp on a GPU with FSDP asked for by a bare strategy (no
    ``model_wrapper``, as a user's own config may have it): bf16 FSDP mixed
    precision, or its fp16 equivalent with AMP's dynamic loss scale where
    the GPU has no bf16. (The GPU is simulated: only the config changes.)"""
    tool = load_tool('train.py')
    from mmengine.logging import MMLogger
    MMLogger.get_current_instance()  # created while the real CUDA state shows
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    monkeypatch.setattr(torch.cuda, 'is_bf16_supported', lambda: bf16)
    cfg = Config.fromfile(
        osp.join(repo_root, 'configs/demo/mixedae_vit-tiny-p8_demo.py'))
    cfg.merge_from_dict(dict(runner_type='FlexibleRunner',
                             strategy=dict(type='MixedAEFSDPStrategy')))
    tool.configure_amp(cfg, amp_flag=True)
    precision = cfg.strategy.model_wrapper['mixed_precision']
    if bf16:
        assert precision == tool.FSDP_BF16
        assert cfg.optim_wrapper.type == 'OptimWrapper'
    else:
        assert set(precision.values()) == {'float16'}
        assert cfg.optim_wrapper.type == 'AmpOptimWrapper'
        assert cfg.optim_wrapper.dtype == 'float16'
        assert cfg.optim_wrapper.loss_scale == 'dynamic'
