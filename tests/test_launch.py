"""Training surface: recipe configs, tools/train.py, dist_train.sh, resume."""
import json
import os
import os.path as osp
import sys
import textwrap

import numpy as np
import pytest
import torch
from mmengine.config import Config

from conftest import IN_PROCESS_LOADING, load_tool
from builders import pretraining_imagenet, run_command
from transfer_utils import assert_cpu_fp32_and_scaled_lr

CONFIGS = {  # arch, patch size, epochs
    'mixedae_vitb_300e.py': ('b', 16, 300),
    'mixedae_vitb_800e.py': ('b', 16, 800),
    'mixedae_vitb_1600e.py': ('b', 16, 1600),
    'mixedae_vitl_1600e.py': ('l', 16, 1600),
    'mixedae_vith-p14_1600e.py': ('h', 14, 1600),
}


@pytest.mark.parametrize('name', sorted(CONFIGS))
def test_recipe_configs_hold_the_spec_values(repo_root, name):
    """Spec table: MAE's recipe + MixedAE's mixing/homologous settings."""
    arch, patch_size, epochs = CONFIGS[name]
    cfg = Config.fromfile(osp.join(repo_root, 'configs', name))
    model = cfg.model
    assert model.type == 'MixedAE' and model.segment_embed == 'decoder'
    assert model.ablation == 'none'
    assert model.backbone.arch == arch
    assert (model.backbone.img_size, model.backbone.patch_size) == (
        224, patch_size)
    assert model.backbone.mixing_ratio == 0.25
    assert model.backbone.homo_attn_layers is None  # all layers
    assert (model.neck.decoder_embed_dim, model.neck.decoder_depth,
            model.neck.decoder_num_heads) == (512, 8, 16)
    assert model.head.norm_pix is True
    assert model.head.homo_loss_weight == 0.5
    assert model.head.homo_temperature == 0.25

    optim = cfg.optim_wrapper
    assert optim.type == 'AmpOptimWrapper' and optim.dtype == 'bfloat16'
    assert optim.optimizer.type == 'AdamW'
    assert optim.optimizer.betas == (0.9, 0.95)
    assert optim.optimizer.weight_decay == 0.05
    assert optim.optimizer.lr == pytest.approx(1.5e-4 * 4096 / 256)
    assert cfg.auto_scale_lr.base_batch_size == 4096
    no_decay = {k for k, v in optim.paramwise_cfg.custom_keys.items()
                if v.get('decay_mult') == 0}
    assert no_decay == {'ln', 'bias', 'pos_embed', 'mask_token',
                        'cls_token', 'segment_embed'}

    warmup, cosine = cfg.param_scheduler
    assert warmup.type == 'LinearLR' and warmup.by_epoch
    assert (warmup.begin, warmup.end) == (0, 40)
    assert cosine.type == 'CosineAnnealingLR' and cosine.eta_min == 0
    assert (cosine.begin, cosine.end, cosine.T_max) == (40, epochs,
                                                        epochs - 40)
    assert cfg.train_cfg.max_epochs == epochs

    loader = cfg.train_dataloader
    assert loader.batch_size == 512 and loader.drop_last is True
    crop = next(t for t in loader.dataset.pipeline
                if t.type == 'RandomResizedCrop')
    assert crop.scale == 224 and crop.crop_ratio_range == (0.2, 1.0)
    assert crop.interpolation == 'bicubic'
    assert [t.type for t in loader.dataset.pipeline] == [
        'LoadImageFromFile', 'RandomResizedCrop', 'RandomFlip', 'PackInputs'
    ]
    assert cfg.default_hooks.checkpoint.type == 'DurableCheckpointHook'
    assert 'StepSeedHook' in [h.type for h in cfg.custom_hooks]


@pytest.mark.slow
def test_train_tool_runs_vitb_1600e_one_iteration_on_cpu(repo_root,
                                                         tmp_path):
    data = pretraining_imagenet(str(tmp_path / 'imagenet'))
    work = tmp_path / 'work'
    result = run_command([
        sys.executable, 'tools/train.py', 'configs/mixedae_vitb_1600e.py',
        '--work-dir', str(work), '--cfg-options',
        f'train_dataloader.dataset.data_root={data}',
        'train_dataloader.dataset.split=train',
        'train_dataloader.batch_size=4', *IN_PROCESS_LOADING,
        'train_cfg.max_epochs=1',
        'default_hooks.logger.interval=1'
    ], cwd=repo_root)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert 'running this config in fp32 on the CPU' in result.stdout
    log = open(next(work.glob('*/*.log'))).read()
    # lr 2.4e-3 is for 4096 images: scaled to this run's 4
    assert_cpu_fp32_and_scaled_lr(result.stdout + log, 1.5e-4 * 4096 / 256,
                                  4, 4096)
    # 8 images, batch 4 (one mixed sample of 4) -> 2 iterations
    assert 'Epoch(train) [1][2/2]' in log
    assert 'loss_rec' in log and 'loss_homo' in log
    assert (work / 'epoch_1.pth').exists()


@pytest.mark.slow
def test_train_tool_runs_an_ablation_of_the_vitb_recipe(repo_root, tmp_path):
    """One config line turns the recipe into an ablation (tiny encoder and
    decoder through --cfg-options; the recipe's 224 crops and data)."""
    data = pretraining_imagenet(str(tmp_path / 'imagenet'), per_class=2)
    work = tmp_path / 'work'
    result = run_command([
        sys.executable, 'tools/train.py', 'configs/mixedae_vitb_1600e.py',
        '--work-dir', str(work), '--cfg-options', 'model.ablation=naive_mixing',
        'model.backbone.arch=demo-tiny', 'model.neck.decoder_embed_dim=32',
        'model.neck.decoder_depth=1', 'model.neck.decoder_num_heads=2',
        f'train_dataloader.dataset.data_root={data}',
        'train_dataloader.dataset.split=train',
        'train_dataloader.batch_size=4', *IN_PROCESS_LOADING,
        'train_cfg.max_epochs=1',
        'default_hooks.logger.interval=1'
    ], cwd=repo_root)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    log = open(next(work.glob('*/*.log'))).read()
    step = next(line for line in log.splitlines()
                if 'Epoch(train) [1][1/1]' in line)
    # naive mixing: reconstruction only, no homologous attention to measure
    assert 'loss_rec' in step
    assert 'loss_homo' not in step and 'homo_acc' not in step


def test_amp_flag_on_cpu_fails_with_a_clear_message(repo_root, tmp_path):
    if torch.cuda.is_available():
        pytest.skip('this machine has a GPU')
    with pytest.raises(SystemExit, match='--amp needs a CUDA GPU'):
        load_tool('train.py').main([
            osp.join(repo_root, 'configs/demo/mixedae_vit-tiny-p8_demo.py'),
            '--amp', '--work-dir', str(tmp_path)])


def _demo_overrides(data_root, max_iters, batch_size=16, interval=None,
                    shipped_workers=False):
    workers = [] if shipped_workers else IN_PROCESS_LOADING
    return [
        f'train_dataloader.dataset.data_root={data_root}',
        f'train_dataloader.batch_size={batch_size}',
        f'train_cfg.max_iters={max_iters}',
        f'default_hooks.checkpoint.interval={interval or max_iters}',
        'default_hooks.logger.interval=1',
    ] + workers


@pytest.mark.slow
def test_dist_train_two_cpu_processes(repo_root, demo_data, tmp_path):
    work = tmp_path / 'dist'
    result = run_command(
        ['bash', 'tools/dist_train.sh', 'configs/demo/mixedae_vit-tiny-p8_demo.py',
         '2', '--work-dir', str(work), '--cfg-options'] +
        _demo_overrides(demo_data, max_iters=4, batch_size=8),
        cwd=repo_root, env={'OMP_NUM_THREADS': '1'})
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    # both ranks trained, each on its own batches
    histories = [
        json.load(open(work / f'loss_history_rank{r}.json')) for r in (0, 1)
    ]
    for h in histories:
        assert h['last_iter'] == 4 and len(h['history']['loss_homo']) == 4
    assert histories[0]['history']['loss'] != histories[1]['history']['loss']
    log = open(next(work.glob('*/*.log'))).read()
    assert 'Distributed launcher: pytorch' in log
    assert 'Distributed training: True' in log
    assert 'Iter(train) [4/4]' in log
    # the checkpoint loads (weights-only) into a fresh model
    ckpt = torch.load(work / 'iter_4.pth', map_location='cpu')
    import mixedae_mm  # noqa: F401
    from mmpretrain.registry import MODELS
    cfg = Config.fromfile(
        osp.join(repo_root, 'configs/demo/mixedae_vit-tiny-p8_demo.py'))
    model = MODELS.build(cfg.model)
    model.load_state_dict(ckpt['state_dict'], strict=True)


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_weights(repo_root, demo_data,
                                                tmp_path):
    """SIGKILL after iteration 5, resume from iteration 4: the final weights
    equal those of an uninterrupted run with the same seed (the demo's 2
    persistent workers, as shipped; the loader passes an epoch boundary)."""
    helpers = osp.join(repo_root, 'tests', 'helpers')
    base = osp.join(repo_root, 'configs/demo/mixedae_vit-tiny-p8_demo.py')
    killed_cfg = tmp_path / 'killed.py'
    killed_cfg.write_text(
        textwrap.dedent(f"""
        _base_ = {base!r}
        custom_imports = dict(imports=['mixedae_mm', 'kill_hook'],
                              allow_failed_imports=False)
        custom_hooks = [dict(type='WeightsOnlyCheckpointHook'),
                        dict(type='StepSeedHook'),
                        dict(type='KillAtIterHook', iteration=5)]
        """))
    overrides = _demo_overrides(demo_data, max_iters=8, interval=4,
                                shipped_workers=True)
    env = {'PYTHONPATH': os.pathsep.join([helpers, repo_root])}

    full = tmp_path / 'full'
    result = run_command([sys.executable, 'tools/train.py', base,
                          '--work-dir', str(full), '--cfg-options'] +
                         overrides, cwd=repo_root)
    assert result.returncode == 0, result.stderr[-3000:]

    part = tmp_path / 'part'
    result = run_command([sys.executable, 'tools/train.py', str(killed_cfg),
                          '--work-dir', str(part), '--cfg-options'] +
                         overrides, cwd=repo_root, env=env)
    assert result.returncode == -9, 'the run was not killed'
    assert (part / 'iter_4.pth').exists()
    assert not (part / 'iter_8.pth').exists()

    result = run_command([sys.executable, 'tools/train.py', base,
                          '--work-dir', str(part), '--resume',
                          '--cfg-options'] + overrides, cwd=repo_root)
    assert result.returncode == 0, result.stderr[-3000:]
    log = open(sorted(part.glob('*/*.log'))[-1]).read()
    assert 'resumed epoch: 0, iter: 4' in log

    final_full = torch.load(full / 'iter_8.pth', map_location='cpu')
    final_part = torch.load(part / 'iter_8.pth', map_location='cpu')
    for key, value in final_full['state_dict'].items():
        torch.testing.assert_close(final_part['state_dict'][key], value,
                                   rtol=0, atol=1e-6, msg=key)
    # the optimizer state matches too (the resumed run restored it)
    state_full = final_full['optimizer']['state']
    state_part = final_part['optimizer']['state']
    for idx in state_full:
        torch.testing.assert_close(state_part[idx]['exp_avg'],
                                   state_full[idx]['exp_avg'], rtol=0,
                                   atol=1e-6)


def test_checkpoints_load_weights_only_and_untrusted_pickles_are_refused(
        tmp_path):
    """Our checkpoints need no allow-list; a pickle with code is refused."""
    import mixedae_mm  # noqa: F401
    from mmengine.logging import HistoryBuffer

    from mixedae_mm.engine import WeightsOnlyCheckpointHook
    hook = WeightsOnlyCheckpointHook()
    buffer = HistoryBuffer()
    buffer.update(1.5)
    buffer.update(0.5)
    checkpoint = {
        'state_dict': {'w': torch.ones(2)},
        'meta': {'seed': 0, 'np_value': np.float64(2.0)},
        'message_hub': {'log_scalars': {'train/loss': buffer},
                        'runtime_info': {'iter': 3}},
    }
    hook.before_save_checkpoint(None, checkpoint)
    path = tmp_path / 'ckpt.pth'
    torch.save(checkpoint, path)
    loaded = torch.load(path, weights_only=True)  # no allow-list needed
    hook.after_load_checkpoint(None, loaded)
    restored = loaded['message_hub']['log_scalars']['train/loss']
    assert isinstance(restored, HistoryBuffer)
    assert restored.mean() == buffer.mean() and restored.current() == 0.5
    assert loaded['meta']['np_value'] == 2.0

    class Evil:

        def __reduce__(self):
            return (os.system, ('echo pwned',))

    evil = tmp_path / 'evil.pth'
    torch.save({'state_dict': {}, 'x': Evil()}, evil)
    from mmengine.runner.checkpoint import _load_checkpoint
    with pytest.raises(Exception, match='(?i)weights.only'):
        _load_checkpoint(str(evil), map_location='cpu')


def test_step_seed_depends_on_seed_rank_and_iteration():
    from mixedae_mm.engine.seeding import step_seed
    seeds = {step_seed(s, r, i) for s in (0, 1) for r in (0, 1)
             for i in range(50)}
    assert len(seeds) == 200
    assert step_seed(3, 1, 7) == step_seed(3, 1, 7)
