"""A week of GPU time is never lost: checkpoints survive kills during a save,
loading never runs pickled code, and foreign checkpoints have a way in.

The end-to-end cases run ``tools/train.py`` on the shipped demo config,
shrunk with ``--cfg-options``, as subprocesses (a real SIGKILL).
"""
import os
import os.path as osp
import signal
import stat
import subprocess
import sys

import pytest
import torch
from conftest import call_tool

from mixedae_mm.checkpoints import (CheckpointError, atomic_write,
                                    load_weights_only, remove_stale_temps)

DEMO = 'configs/demo/mixedae_vit-tiny-p8_demo.py'
UMASK = 0o022


def run(repo_root, args, env=None):
    """A subprocess with umask 022 (the usual default), as a user runs it."""
    return subprocess.run(
        [sys.executable, *map(str, args)], cwd=repo_root,
        capture_output=True, text=True, timeout=600, umask=UMASK,
        env=dict(os.environ, OMP_NUM_THREADS='1', **(env or {})))


def demo_overrides(data_root, max_iters, interval=1, **more):
    items = dict({
        'train_dataloader.dataset.data_root': data_root,
        'train_dataloader.batch_size': 8,
        'train_dataloader.num_workers': 0,
        'train_dataloader.persistent_workers': False,
        'train_cfg.max_iters': max_iters,
        'default_hooks.checkpoint.interval': interval,
        'default_hooks.logger.interval': 1,
    }, **more)
    return ['--cfg-options'] + [f'{k}={v}' for k, v in items.items()]


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def temp_files(folder):
    return [f for _, _, files in os.walk(folder) for f in files
            if f.endswith('.tmp')]


def last_log(work):
    return open(sorted(work.glob('*/*.log'))[-1]).read()


@pytest.mark.slow
def test_run_killed_while_saving_with_rotation_resumes(repo_root, demo_data,
                                                       tmp_path):
    """max_keep_ckpts=1, killed half-way through writing iter_2.pth: mmengine's
    rotation had already deleted iter_1.pth, leaving nothing to resume."""
    work = tmp_path / 'work'
    overrides = demo_overrides(
        demo_data, max_iters=3, **{'default_hooks.checkpoint.max_keep_ckpts':
                                   1})
    killed = run(repo_root, [
        'tests/helpers/die_while_saving.py', 'iter_2.pth', 'tools/train.py',
        DEMO, '--work-dir', work
    ] + overrides)
    assert killed.returncode == -9, killed.stderr[-3000:]
    assert temp_files(work), 'the kill did not happen during the write'
    assert not (work / 'iter_2.pth').exists()
    assert (work / 'last_checkpoint').read_text() == str(work / 'iter_1.pth')
    assert load_weights_only(work / 'iter_1.pth')['meta']['iter'] == 1

    resumed = run(repo_root,
                  ['tools/train.py', DEMO, '--work-dir', work, '--resume'] +
                  overrides)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert 'resumed epoch: 0, iter: 1' in last_log(work)
    assert temp_files(work) == []
    assert sorted(f for f in os.listdir(work) if f.endswith('.pth')) == [
        'iter_3.pth'
    ]
    assert (work / 'last_checkpoint').read_text() == str(work / 'iter_3.pth')
    # the mode a plain open() gives under umask 022 (mkstemp's is 0o600)
    assert mode(work / 'iter_3.pth') == 0o644
    assert mode(work / 'last_checkpoint') == 0o644


def test_crafted_pickle_passed_to_resume_never_runs(demo_data, tmp_path,
                                                    capsys, monkeypatch):
    marker = tmp_path / 'payload_ran'

    class Payload:

        def __reduce__(self):
            return (os.mkdir, (str(marker), ))

    evil = tmp_path / 'evil.pth'
    torch.save({'state_dict': {}, 'meta': Payload()}, evil)
    # torch's switch that makes every load unpickle whatever it finds
    monkeypatch.setenv('TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD', '1')
    result = call_tool('train.py', DEMO, '--work-dir', tmp_path / 'work',
                       '--resume', evil,
                       *demo_overrides(demo_data, max_iters=1), capsys=capsys)
    assert result.returncode != 0
    assert not marker.exists(), 'the pickled payload ran'
    assert 'trust_checkpoint.py' in result.stderr
    assert f'{evil}: holds pickled Python objects' in result.stderr


@pytest.mark.slow
def test_plain_mmengine_checkpoint_via_trust_tool_resumes(
        repo_root, demo_data, tmp_path, capsys):
    plain_dir = tmp_path / 'plain'
    plain = run(repo_root, ['tools/train.py', DEMO, '--work-dir', plain_dir] +
                demo_overrides(demo_data, max_iters=1, **{
                    'default_hooks.checkpoint.type': 'CheckpointHook'}))
    assert plain.returncode == 0, plain.stderr[-3000:]
    # told at start-up, not when resuming a week later
    assert "type='DurableCheckpointHook'" in plain.stdout + plain.stderr
    ckpt = plain_dir / 'iter_1.pth'
    with pytest.raises(Exception, match='HistoryBuffer'):
        torch.load(ckpt, weights_only=True)

    work = tmp_path / 'work'
    overrides = demo_overrides(demo_data, max_iters=2)
    # the refusal: train.py's main, in-process
    refused = call_tool('train.py', DEMO, '--work-dir', work, '--resume',
                        ckpt, *overrides, capsys=capsys)
    assert refused.returncode != 0
    assert (f'trust_checkpoint.py {ckpt} {plain_dir / "iter_1_weights_only"}'
            '.pth --trust') in refused.stderr

    trusted = tmp_path / 'trusted.pth'
    tool = 'tools/model_converters/trust_checkpoint.py'
    no_opt_in = call_tool('model_converters/trust_checkpoint.py', ckpt,
                          trusted, capsys=capsys)  # a refusal: in-process
    assert no_opt_in.returncode != 0 and 'without --trust' in no_opt_in.stderr
    assert not trusted.exists()
    converted = run(repo_root, [tool, ckpt, trusted, '--trust'])
    assert converted.returncode == 0, converted.stderr
    assert mode(trusted) == 0o644

    resumed = run(repo_root,
                  ['tools/train.py', DEMO, '--work-dir', work, '--resume',
                   trusted] + overrides)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert 'resumed epoch: 0, iter: 1' in last_log(work)
    assert load_weights_only(work / 'iter_2.pth')['meta']['iter'] == 2


CONVERTERS = {
    'extract_backbone.py': [],
    'convert_timm.py': ['--to', 'timm'],
    'publish_model.py': [],
    'trust_checkpoint.py': ['--trust'],
}


@pytest.mark.parametrize('tool', sorted(CONVERTERS))
def test_truncated_checkpoint_is_one_error_line_naming_it(
        tmp_path, tool, capsys):
    whole = tmp_path / 'whole.pth'
    torch.save({'state_dict': {'backbone.cls_token': torch.zeros(1, 1, 8)}},
               whole)
    cut = tmp_path / 'iter_8.pth'
    cut.write_bytes(whole.read_bytes()[:whole.stat().st_size // 2])
    out = tmp_path / 'out.pth'
    result = call_tool(f'model_converters/{tool}', cut, out,
                       *CONVERTERS[tool], capsys=capsys)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f'{tool}: error: {cut}: not a complete '
                               'checkpoint, it may be truncated')
    assert not out.exists()


@pytest.mark.slow
def test_converter_outputs_get_the_umask_mode(repo_root, tmp_path):
    src = tmp_path / 'pretrain.pth'
    torch.save({'state_dict': {'backbone.cls_token': torch.zeros(1, 1, 8)}},
               src)
    out = tmp_path / 'backbone.pth'
    result = run(repo_root,
                 ['tools/model_converters/extract_backbone.py', src, out])
    assert result.returncode == 0, result.stderr
    assert mode(out) == 0o644
    assert set(os.listdir(tmp_path)) == {'pretrain.pth', 'backbone.pth'}


def test_atomic_write_follows_the_umask(tmp_path):
    old = os.umask(0o027)
    try:
        path = atomic_write(tmp_path / 'a.pth', lambda f: f.write(b'x'))
    finally:
        os.umask(old)
    assert mode(path) == 0o640


def test_only_our_temp_files_are_removed(tmp_path):
    ours = ['.iter_4.pth.k3j_x9a2.tmp', '.last_checkpoint.abcdefgh.tmp']
    others = ['iter_4.pth', 'notes.tmp', '.hidden.tmp', 'x.pth.abcdefgh.tmp']
    for name in ours + others:
        (tmp_path / name).write_bytes(b'')
    removed = remove_stale_temps(str(tmp_path))
    assert sorted(osp.basename(p) for p in removed) == sorted(ours)
    assert sorted(os.listdir(tmp_path)) == sorted(others)


def test_missing_resume_target_named_by_last_checkpoint(tmp_path):
    from mixedae_mm.engine.fileio import load_from_local_weights_only
    (tmp_path / 'last_checkpoint').write_text(str(tmp_path / 'iter_3.pth'))
    with pytest.raises(FileNotFoundError, match='last_checkpoint names it'):
        load_from_local_weights_only(str(tmp_path / 'iter_3.pth'))


def test_weights_only_is_passed_whatever_the_environment(tmp_path,
                                                        monkeypatch):
    """mmengine's loader for local files (resume, load_from, init_cfg)."""
    import mixedae_mm  # noqa: F401  (registers the loaders)
    from mmengine.runner.checkpoint import _load_checkpoint

    monkeypatch.setenv('TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD', '1')
    marker = tmp_path / 'payload_ran'

    class Payload:

        def __reduce__(self):
            return (os.mkdir, (str(marker), ))

    evil = tmp_path / 'evil.pth'
    torch.save({'x': Payload()}, evil)
    with pytest.raises(CheckpointError, match='trust_checkpoint.py'):
        _load_checkpoint(str(evil), map_location='cpu')
    assert not marker.exists()


#: runs each converter (argv lists) with OpenMMLab unimportable, as on a
#: machine that has torch only
WITHOUT_OPENMMLAB = (
    'import json, runpy, sys\n'
    'for name in ("mmcv", "mmengine", "mmpretrain"):\n'
    '    sys.modules[name] = None\n'
    'for argv in json.loads(sys.argv[1]):\n'
    '    sys.argv = argv\n'
    '    try:\n'
    '        runpy.run_path(argv[0], run_name="__main__")\n'
    '    except SystemExit as stop:\n'
    '        assert stop.code in (0, None), (argv, stop.code)\n')


@pytest.mark.slow
def test_converters_run_where_openmmlab_is_not_installed(
        repo_root, pretrained_checkpoint, tmp_path):
    """The converters and mixedae_mm.checkpoints (their one atomic write and
    weights-only read) need torch only."""
    import json
    pickled = tmp_path / 'official_mae.pth'
    torch.save(dict(model={'cls_token': torch.zeros(1, 1, 8)},
                    args=__import__('argparse').Namespace(lr=1.0)), pickled)
    tools = 'tools/model_converters/'
    runs = [
        [tools + 'extract_backbone.py', pretrained_checkpoint,
         tmp_path / 'backbone.pth'],
        [tools + 'convert_timm.py', tmp_path / 'backbone.pth',
         tmp_path / 'timm.pth', '--to', 'timm'],
        [tools + 'publish_model.py', tmp_path / 'backbone.pth',
         tmp_path / 'published.pth'],
        [tools + 'trust_checkpoint.py', pickled, tmp_path / 'trusted.pth',
         '--trust'],
    ]
    result = run(repo_root, ['-c', WITHOUT_OPENMMLAB,
                             json.dumps([list(map(str, r)) for r in runs])])
    assert result.returncode == 0, result.stderr
    assert set(torch.load(tmp_path / 'timm.pth', weights_only=True)) >= {
        'cls_token', 'pos_embed', 'blocks.0.attn.qkv.weight'}
    assert list(tmp_path.glob('published-*.pth'))
    assert torch.load(tmp_path / 'trusted.pth', weights_only=True)[
        'args'] == {'lr': 1.0}


def test_disk_full_while_saving_names_the_file_and_the_intact_checkpoint(
        demo_data, tmp_path, monkeypatch):
    """ENOSPC while iter_2.pth is written: one message naming that file and
    iter_1.pth, which stays complete, loadable and named by
    last_checkpoint."""
    from conftest import short_demo_run
    from mixedae_mm.engine import CheckpointSaveError, fileio

    real_write = fileio.atomic_write

    def disk_fills_at_iter_2(path, content):
        if osp.basename(path) == 'iter_2.pth':
            raise OSError(28, 'No space left on device')
        return real_write(path, content)

    monkeypatch.setattr(fileio, 'atomic_write', disk_fills_at_iter_2)

    def every_iteration(cfg):
        cfg.default_hooks.checkpoint.interval = 1

    runner = short_demo_run(tmp_path, demo_data, iters=2, batch_size=8,
                            name='disk_full', edit=every_iteration)
    with pytest.raises(CheckpointSaveError) as failed:
        runner.train()
    first, second = tmp_path / 'iter_1.pth', tmp_path / 'iter_2.pth'
    message = str(failed.value)
    assert '\n' not in message
    assert message.startswith(
        f'could not write checkpoint {second}: No space left on device '
        f'[Errno 28]; the last intact checkpoint is {first}')
    assert '--resume' in message
    assert not second.exists() and temp_files(tmp_path) == []
    assert (tmp_path / 'last_checkpoint').read_text() == str(first)
    assert load_weights_only(first)['meta']['iter'] == 1


@pytest.mark.slow
@pytest.mark.skipif(not hasattr(signal, 'SIGXFSZ'),
                    reason='needs RLIMIT_FSIZE / SIGXFSZ (Unix)')
def test_file_size_limit_while_saving_is_one_error_line(repo_root, demo_data,
                                                        tmp_path):
    """A real EFBIG: RLIMIT_FSIZE drops to 1 MiB once iter_1.pth is in
    place, so iter_2.pth cannot be written. train.py ends with one line
    naming both files, no traceback; iter_1.pth is intact."""
    work = tmp_path / 'work'
    result = run(repo_root, [
        'tests/helpers/limit_file_size_after.py', 'iter_1.pth', 2**20,
        'tools/train.py', DEMO, '--work-dir', work
    ] + demo_overrides(demo_data, max_iters=3))
    assert result.returncode == 1, result.stderr[-3000:]
    assert 'Traceback' not in result.stderr, result.stderr[-3000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last == (
        f'train.py: error: could not write checkpoint {work / "iter_2.pth"}'
        f': File too large [Errno 27]; the last intact checkpoint is '
        f'{work / "iter_1.pth"}: free disk space (or raise the file-size '
        'limit, ulimit -f), then resume with --resume')
    assert (work / 'last_checkpoint').read_text() == str(work / 'iter_1.pth')
    assert load_weights_only(work / 'iter_1.pth')['meta']['iter'] == 1
    assert temp_files(work) == []


def test_an_object_that_stays_unloadable_is_named():
    """What to_weights_only cannot convert (here a date) is refused with its
    type named, not with an error of the check itself."""
    import datetime

    from mixedae_mm.checkpoints import check_weights_only, to_weights_only
    checkpoint = to_weights_only({'meta': {'day': datetime.date(2026, 1, 1)}})
    with pytest.raises(CheckpointError, match=r'^old\.pth: holds an object '
                       r'that weights_only refuses .*datetime'):
        check_weights_only(checkpoint, 'old.pth')
