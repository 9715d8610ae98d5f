"""An unreadable image stops the run naming its path, or is skipped and
listed at the end; through tools/train.py on the shipped demo config, with
its two data loader workers."""
import importlib
import os
import os.path as osp
import shutil

import pytest
from mmengine.config import Config

from conftest import load_tool

DEMO = 'configs/demo/mixedae_vit-tiny-p8_demo.py'


@pytest.fixture
def photos_with_bad_files(demo_data, tmp_path):
    """14 demo photos plus a zero-byte and a not-an-image .jpg: two batches
    of 8, so every file is read in each epoch."""
    train_dir = tmp_path / 'photos' / 'train'
    train_dir.mkdir(parents=True)
    for name in sorted(os.listdir(osp.join(demo_data, 'train')))[:14]:
        shutil.copy(osp.join(demo_data, 'train', name), train_dir)
    empty = train_dir / 'empty.jpg'
    empty.write_bytes(b'')
    text = train_dir / 'notes.jpg'
    text.write_text('not an image\n' * 20)
    return str(tmp_path / 'photos'), str(empty), str(text)


def train(repo_root, work_dir, data_root, *options, iters):
    argv = [
        osp.join(repo_root, DEMO), '--work-dir', str(work_dir),
        '--cfg-options', f'train_dataloader.dataset.data_root={data_root}',
        'train_dataloader.batch_size=8', f'train_cfg.max_iters={iters}',
        f'default_hooks.checkpoint.interval={iters}', *options
    ]
    try:
        return load_tool('train.py').main(argv)
    except SystemExit as stop:
        return str(stop.code)


@pytest.mark.slow
def test_unreadable_image_stops_the_run_naming_the_file(
        repo_root, photos_with_bad_files, tmp_path):
    root, empty, text = photos_with_bad_files
    # one epoch, with the shipped 2 workers
    message = train(repo_root, tmp_path / 'work', root, iters=2)
    assert isinstance(message, str), 'the run did not stop'
    assert message.startswith('train.py: error: cannot read image '), message
    assert (f'cannot read image {empty}: the file is empty (0 bytes)'
            in message or f'cannot read image {text}: ' in message), message
    assert 'unreadable_images=skip' in message


@pytest.mark.slow
def test_skip_trains_on_and_lists_the_files_at_the_end(
        repo_root, photos_with_bad_files, tmp_path):
    from mixedae_mm.datasets import UnreadableImageReportHook
    root, empty, text = photos_with_bad_files
    runner = train(repo_root, tmp_path / 'work', root,
                   'unreadable_images=skip', iters=4)
    assert not isinstance(runner, str), runner
    assert runner.iter == 4
    hook = next(h for h in runner.hooks
                if isinstance(h, UnreadableImageReportHook))
    assert sorted(hook.skipped) == sorted([empty, text])
    assert hook.skipped[empty][1] == 'the file is empty (0 bytes)'
    with open(tmp_path / 'work' / 'unreadable_images.txt') as f:
        listed = f.read()
    assert empty in listed and text in listed


@pytest.mark.slow
def test_every_shipped_pipeline_uses_the_checked_loader(repo_root, tmp_path):
    """Inherited pipelines included (ImageNet, ADE20K, COCO bases), and the
    loader builds in each codebase's registry."""
    from mixedae_mm.datasets import check_image_loading
    from mixedae_mm.downstream import REGISTRATIONS
    configs = {
        'configs/mixedae_vitb_1600e.py': 'mmpretrain',
        'configs/demo/mixedae_vit-tiny-p8_demo.py': 'mmpretrain',
        'configs/finetune/mixedae_vitb_ft-100e_in1k.py': 'mmpretrain',
        'configs/finetune/mixedae_vitb_linear-90e_in1k.py': 'mmpretrain',
        'configs/seg/mixedae_vitb_upernet-160k_ade20k-512.py': 'mmseg',
        'configs/det/mixedae_vitb_mask-rcnn_simplefpn-lsj-100e_coco.py':
        'mmdet',
    }
    from mmengine.registry import DefaultScope
    for name, scope in configs.items():
        cfg = Config.fromfile(osp.join(repo_root, name))
        cfg.work_dir = str(tmp_path)
        cfg.unreadable_images = 'skip'
        check_image_loading(cfg)
        loaders = {'LoadImageFromFile': [], 'CheckedLoadImageFromFile': []}

        def find(node):
            if isinstance(node, dict):
                if node.get('type') in loaders:
                    loaders[node['type']].append(node)
                for value in node.values():
                    find(value)
            elif isinstance(node, (list, tuple)):
                for value in node:
                    find(value)

        for split in ('train', 'val', 'test'):
            find(cfg.get(f'{split}_dataloader'))
        assert loaders['LoadImageFromFile'] == [], name
        checked = loaders['CheckedLoadImageFromFile']
        skipping = [c for c in checked if c['on_unreadable'] == 'skip']
        assert skipping, name  # the training pipeline skips
        importlib.import_module(REGISTRATIONS[scope])
        transforms = importlib.import_module(f'{scope}.registry').TRANSFORMS
        with DefaultScope.overwrite_default_scope(scope):
            built = transforms.build(dict(skipping[0]))
        assert type(built).__name__ == 'CheckedLoadImageFromFile'
        assert any(h['type'] == 'UnreadableImageReportHook'
                   for h in cfg.custom_hooks), name
