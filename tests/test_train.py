"""Training through mmengine's Runner on the embedded demo data."""
import os
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from mmengine.runner import Runner

import mixedae_mm  # noqa: F401
from mixedae_mm.engine import TrainingSummaryHook


def demo_cfg(repo_root, demo_data, work_dir, max_iters):
    cfg = Config.fromfile(
        osp.join(repo_root, 'configs/demo/mixedae_vit-tiny-p8_demo.py'))
    cfg.work_dir = str(work_dir)
    cfg.train_dataloader.dataset.data_root = demo_data
    cfg.train_dataloader.num_workers = 0
    cfg.train_dataloader.persistent_workers = False
    cfg.train_cfg.max_iters = max_iters
    cfg.param_scheduler = [
        dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0,
             end=5)
    ]
    cfg.default_hooks.checkpoint.interval = max_iters
    cfg.default_hooks.logger.interval = 5
    return cfg


def test_demo_dataset_is_real_photos_and_idempotent(demo_data):
    from PIL import Image

    from mixedae_mm.datasets import build_demo_dataset, shipped_photos
    photos = shipped_photos()
    assert len(photos) >= 10
    files = sorted(
        f for f in __import__('os').listdir(osp.join(demo_data, 'train')))
    assert len(files) == 4 * len(photos)
    with Image.open(osp.join(demo_data, 'train', files[0])) as img:
        assert img.size == (80, 80) and img.mode == 'RGB'
    before = osp.getmtime(osp.join(demo_data, 'train', files[0]))
    build_demo_dataset(demo_data, crops_per_photo=4, crop_size=80)
    assert osp.getmtime(osp.join(demo_data, 'train', files[0])) == before


@pytest.mark.slow
def test_readme_command_1_reaches_its_homologous_accuracy(repo_root,
                                                          tmp_path):
    """README command 1 as tools/run_demo.sh runs it (the shipped demo
    config, the full demo dataset, 120 iterations, 2 workers; only the data
    and work dirs moved to tmp): the last homologous layer ends at >= 1.4 x
    chance (the README states the value), and the checkpoint and the three
    pictures are printed."""
    import re
    import subprocess
    import sys
    env = dict(os.environ, PYTHONPATH=repo_root)
    data, work = tmp_path / 'demo_photos', tmp_path / 'demo'

    def run(*args):
        result = subprocess.run([sys.executable, *args], cwd=repo_root,
                                env=env, capture_output=True, text=True,
                                timeout=900)
        assert result.returncode == 0, result.stderr[-3000:]
        return result.stdout

    run('tools/dataset_converters/build_demo_data.py', str(data))
    out = run('tools/train.py', 'configs/demo/mixedae_vit-tiny-p8_demo.py',
              '--work-dir', str(work), '--cfg-options',
              f'train_dataloader.dataset.data_root={data}')
    # the printed loss curve: six rows of 20 iterations, the last row's
    # mean loss at least 10% below the first's
    rows = re.findall(r'^ +(\d+)-(\d+) +([0-9.]+) ', out, re.MULTILINE)
    assert [int(last) for _, last, _ in rows] == list(range(20, 121, 20))
    assert float(rows[-1][2]) < 0.9 * float(rows[0][2]), rows
    line = re.search(r'last homologous layer \(homo_acc_l5\), mean of the '
                     r'last 50 iterations: ([0-9.]+) = ([0-9.]+) x chance '
                     r'0\.25', out)
    assert line, out[-2000:]
    assert float(line.group(1)) >= 1.4 * 0.25, line.group(0)
    state = torch.load(work / 'iter_120.pth', map_location='cpu',
                       weights_only=False)
    assert any(k.startswith('backbone.layers.0.attn.qkv')
               for k in state['state_dict'])
    assert re.search(r'^checkpoint: .*iter_120\.pth$', out, re.MULTILINE)
    out = run('tools/visualization/demo_figures.py', str(work), '--out',
              str(work / 'figures'))
    for name in ('demo_reconstruction', 'demo_homologous_attention',
                 'demo_curves'):
        assert osp.isfile(work / 'figures' / f'{name}.png')
        assert f'{name}.png' in out


@pytest.mark.filterwarnings(
    'error:Converting a tensor with requires_grad=True:UserWarning')
def test_summary_hook_records_losses_without_the_requires_grad_warning(
        repo_root, demo_data, tmp_path):
    """mmengine hands after_train_iter the summed loss still attached to
    the graph; recording it with float() warned on every iteration of every
    run. Here that warning is an error."""
    cfg = demo_cfg(repo_root, demo_data, tmp_path, max_iters=2)
    cfg.default_hooks.logger.interval = 1
    runner = Runner.from_cfg(cfg)
    runner.train()
    hook = next(h for h in runner.hooks
                if isinstance(h, TrainingSummaryHook))
    assert len(hook.history['loss']) == 2
    assert all(type(v) is float for v in hook.history['loss'])
    assert set(hook.history) >= {'loss', 'loss_rec', 'loss_homo', 'homo_acc'}
    # the summary: the last homologous layer's accuracy over the iterations
    # there are (fewer than its window of 50) against chance, and the
    # checkpoint path
    last_layer = hook.history['homo_acc_l5']  # demo: blocks 0-5 homologous
    assert len(last_layer) == 2
    value = sum(last_layer) / 2
    assert hook.final_accuracy() == ('homo_acc_l5', 2, value)
    assert (f'last homologous layer (homo_acc_l5), mean of the last 2 '
            f'iterations: {value:.4f} = {value / 0.25:.2f} x chance 0.25'
            ) in hook.summary
    assert 'checkpoint:' in hook.summary

    attached = (torch.ones(3, requires_grad=True) * 2).sum()
    TrainingSummaryHook().after_train_iter(None, 0, outputs={'loss': attached})
