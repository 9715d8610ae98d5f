"""OnlineKNNHook: the number it logs during training is knn_eval.py's on
the same checkpoint and images, and it reaches scalars.json and
TensorBoard."""
import json
import os.path as osp
import subprocess
import sys

import pytest
import torch
from mmengine.config import Config
from mmengine.runner import Runner

from builders import SHRUNK, tiny_imagenet
from conftest import load_tool

DEMO = 'configs/demo/mixedae_vit-tiny-p8_demo.py'
LINEAR = 'configs/finetune/mixedae_vitb_linear-90e_in1k.py'


@pytest.mark.slow
def test_hook_equals_knn_eval_on_the_same_checkpoint(
        repo_root, demo_data, pretrained_checkpoint, tmp_path, capsys):
    data = tiny_imagenet(str(tmp_path / 'imagenet'), per_class=4, classes=3)
    options = ['--k', '3', '--temperature', '0.1', '--feature', 'mean']
    # knn_eval.py in this process: the number it prints is what is compared
    capsys.readouterr()
    load_tool('analysis_tools/knn_eval.py').main(
        [osp.join(repo_root, DEMO), pretrained_checkpoint, '--data-root',
         data, '--batch-size', '5', '--num-workers', '0', '--device', 'cpu',
         *options])
    expected = json.loads(capsys.readouterr().out.strip().splitlines()[-1])

    # the hook, in a runner of the demo config holding that checkpoint,
    # on knn_eval's default datasets (the linear probe recipe's) there
    import mixedae_mm  # noqa: F401
    datasets = Config.fromfile(osp.join(repo_root, LINEAR))
    cfg = Config.fromfile(osp.join(repo_root, DEMO))
    cfg.work_dir = str(tmp_path / 'work')
    cfg.train_dataloader.dataset.data_root = demo_data
    cfg.train_dataloader.num_workers = 0
    cfg.train_dataloader.persistent_workers = False
    splits = {}
    for split in ('train', 'val'):
        dataset = datasets[f'{split}_dataloader'].dataset
        dataset.data_root = data
        splits[f'{split}_dataset'] = dataset
    cfg.custom_hooks = [dict(type='OnlineKNNHook', interval=1, k=3,
                             temperature=0.1, feature='mean', batch_size=2,
                             **splits)]
    cfg.load_from = pretrained_checkpoint
    runner = Runner.from_cfg(cfg)
    runner.load_or_resume()
    hook = next(h for h in runner.hooks if type(h).__name__ ==
                'OnlineKNNHook')
    hook.before_train(runner)
    logged = hook.evaluate(runner)
    assert logged == pytest.approx(
        dict(knn_top1=expected['top1'], knn_top5=expected['top5']),
        abs=1e-6)
    assert expected['train_images'] == 12 and expected['val_images'] == 12


def test_hook_restores_train_mode_and_random_state(
        repo_root, demo_data, tmp_path):
    data = tiny_imagenet(str(tmp_path / 'imagenet'), per_class=2, classes=2)
    import mixedae_mm  # noqa: F401
    cfg = Config.fromfile(osp.join(repo_root, DEMO))
    cfg.work_dir = str(tmp_path / 'work')
    cfg.train_dataloader.dataset.data_root = demo_data
    cfg.train_dataloader.num_workers = 0
    cfg.train_dataloader.persistent_workers = False
    dataset = dict(type='ImageNet', data_root=data)
    cfg.custom_hooks = [dict(type='OnlineKNNHook', interval=1, k=2,
                             train_dataset=dict(dataset, split='train'),
                             val_dataset=dict(dataset, split='val'))]
    runner = Runner.from_cfg(cfg)
    hook = next(h for h in runner.hooks if type(h).__name__ ==
                'OnlineKNNHook')
    hook.before_train(runner)
    runner.model.train()
    state = torch.get_rng_state()
    hook.evaluate(runner)
    assert runner.model.training
    assert torch.equal(state, torch.get_rng_state())


def test_bad_settings_name_the_setting():
    from mixedae_mm.engine import OnlineKNNHook
    with pytest.raises(ValueError, match='interval'):
        OnlineKNNHook(train_dataset={}, val_dataset={}, interval=0)
    with pytest.raises(ValueError, match='feature'):
        OnlineKNNHook(train_dataset={}, val_dataset={}, feature='avg')


@pytest.mark.slow
def test_study_config_writes_knn_and_a_picture_to_tensorboard(
        repo_root, small_fashion_mnist, tmp_path, capsys):
    """The shipped MixedAE study config, shrunk through --cfg-options only:
    its TensorBoard events hold knn_top1 and a reconstruction image, and
    scalars.json holds knn_top1."""
    from tensorboard.backend.event_processing.event_accumulator import \
        EventAccumulator
    root = small_fashion_mnist
    work = tmp_path / 'work'
    result = subprocess.run(
        [sys.executable, 'tools/train.py',
         'configs/study/mixedae_vit-study-p4_fmnist.py', '--work-dir',
         str(work), '--cfg-options', *SHRUNK,
         f'train_dataloader.dataset.data_root={root}',
         f'custom_hooks.3.train_dataset.data_root={root}',
         f'custom_hooks.3.val_dataset.data_root={root}',
         'custom_hooks.4.interval=2'],
        cwd=repo_root, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, (result.stdout[-3000:] +
                                    result.stderr[-3000:])
    assert 'online kNN (200 bank / 100 query images' in result.stdout
    events = EventAccumulator(str(next(work.glob('*/vis_data'))))
    events.Reload()
    assert [e.step for e in events.Scalars('knn_top1')] == [2]
    assert 'reconstruction_group0' in events.Tags()['images']
    scalars = [json.loads(line) for line in
               open(next(work.glob('*/vis_data/scalars.json')))]
    assert [r['step'] for r in scalars if 'knn_top1' in r] == [2]
    # and plot_log.py draws it by default
    capsys.readouterr()
    load_tool('analysis_tools/plot_log.py').main(
        [str(work), '--out', str(tmp_path / 'curves.png')])
    assert 'knn_top1' in capsys.readouterr().out.split(' from ')[0]
    assert (tmp_path / 'curves.png').stat().st_size > 0


def test_a_config_without_test_pipeline_names_the_setting():
    from types import SimpleNamespace

    from mixedae_mm.engine import OnlineKNNHook
    hook = OnlineKNNHook(train_dataset={}, val_dataset={})
    runner = SimpleNamespace(model=torch.nn.Linear(1, 1), cfg=Config({}))
    with pytest.raises(ValueError, match='top-level test_pipeline'):
        hook.before_train(runner)
