"""Every entry point that starts a process group tears it down, on success
and on error: a group alive at interpreter exit aborts the process at random
(gloo's threads are destroyed during shutdown: SIGABRT, "terminate called
without an active exception"), which torchrun turns into a failed job."""
import re
import subprocess
import sys

import pytest
import torch.distributed as dist
from conftest import IN_PROCESS_LOADING

from mixedae_mm.engine.launch import process_group_torn_down_at_exit
from builders import tiny_imagenet

#: runs a tool as ``python TOOL ARGS...`` would, then reports whether this
#: rank's default process group is still alive
REPORTING_WRAPPER = '''
import os, runpy, sys
import torch.distributed as dist
tool, sys.argv = sys.argv[1], sys.argv[1:]
try:
    runpy.run_path(tool, run_name='__main__')
finally:
    alive = dist.is_available() and dist.is_initialized()
    # a destroyed group whose C++ object something still holds keeps its
    # gloo threads running until interpreter shutdown: name them
    threads = sorted(
        name for name in (open(f'/proc/self/task/{task}/comm').read().strip()
                          for task in os.listdir('/proc/self/task'))
        if 'gloo' in name)
    sys.stdout.flush()
    # one write(2) of a short line: the two ranks share the pipe, and
    # print's separate writes of text and newline could interleave
    os.write(1, f'group alive after the tool: {alive} '
                f'gloo threads: {",".join(threads) or "none"}\\n'.encode())
'''


def _one_process_group(tmp_path):
    dist.init_process_group('gloo', init_method=f'file://{tmp_path}/store',
                            rank=0, world_size=1)


def test_the_group_is_destroyed_when_the_block_ends(tmp_path):
    with process_group_torn_down_at_exit():
        _one_process_group(tmp_path)
        assert dist.is_initialized()
    assert not dist.is_initialized()


def test_the_group_is_destroyed_when_the_block_raises(tmp_path):
    with pytest.raises(RuntimeError, match='boom'):
        with process_group_torn_down_at_exit():
            _one_process_group(tmp_path)
            raise RuntimeError('boom')
    assert not dist.is_initialized()


def test_without_a_group_the_block_does_nothing():
    with process_group_torn_down_at_exit():
        pass
    assert not dist.is_initialized()


def _gloo_threads() -> int:
    """gloo threads alive in this process, once garbage is collected: a
    group an earlier test of this process left to the collector (a model
    wrapper in a reference cycle) would otherwise vanish mid-test."""
    import gc
    import os
    gc.collect()
    return sum('gloo' in open(f'/proc/self/task/{task}/comm').read()
               for task in os.listdir('/proc/self/task'))


def _gloo_threads_seen(more_than: int) -> bool:
    """Whether the new group's threads show up: each thread takes its
    'gloo' name itself once it first runs, which on a loaded machine can
    be after ``init_process_group`` returns."""
    import time
    deadline = time.monotonic() + 60
    while _gloo_threads() <= more_than:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def _train_a_wrapped_model(fail: bool) -> None:
    """What a runner does to the group: a DDP wrapper (its reducer owns the
    group) that lives only in this frame."""
    import torch
    from torch.nn.parallel import DistributedDataParallel
    model = DistributedDataParallel(torch.nn.Linear(4, 2))
    model(torch.randn(3, 4)).sum().backward()
    if fail:
        raise RuntimeError('boom')


def test_a_wrapped_model_does_not_keep_the_group_alive(tmp_path):
    # counted against the start: a group another test leaked for good shows
    # in both counts
    before = _gloo_threads()
    with process_group_torn_down_at_exit():
        _one_process_group(tmp_path)
        assert _gloo_threads_seen(more_than=before)
        _train_a_wrapped_model(fail=False)
    assert not dist.is_initialized()
    assert _gloo_threads() == before


def test_an_error_does_not_keep_the_group_alive(tmp_path):
    before = _gloo_threads()
    try:
        with process_group_torn_down_at_exit():
            _one_process_group(tmp_path)
            _train_a_wrapped_model(fail=True)
    except RuntimeError as err:
        # while the error (and its traceback, a user's handler may keep it)
        # still exists: its frames held the wrapper until they were cleared
        assert str(err) == 'boom'
        assert not dist.is_initialized()
        assert _gloo_threads() == before
    else:
        pytest.fail('the error did not propagate')


def _run_two_ranks(repo_root, tmp_path, tool, args):
    wrapper = tmp_path / 'report_group.py'
    wrapper.write_text(REPORTING_WRAPPER)
    result = subprocess.run(
        [sys.executable, '-m', 'torch.distributed.run', '--standalone',
         '--nproc_per_node', '2', str(wrapper), tool, *args,
         '--launcher', 'pytorch'],
        cwd=repo_root, capture_output=True, text=True, timeout=300,
        env=dict(__import__('os').environ, OMP_NUM_THREADS='1'))
    # torchrun exits 0 only when every rank did
    assert result.returncode == 0, (result.stdout[-2000:] +
                                    result.stderr[-4000:])
    reports = re.findall(
        r'group alive after the tool: (\w+) gloo threads: (\S+)',
        result.stdout)
    assert reports == [('False', 'none'), ('False', 'none')], result.stdout


@pytest.mark.slow
def test_knn_eval_under_torchrun_tears_down_on_every_rank(
        repo_root, pretrained_checkpoint, tmp_path):
    data = tiny_imagenet(str(tmp_path / 'imagenet'), per_class=2, classes=2)
    _run_two_ranks(repo_root, tmp_path, 'tools/analysis_tools/knn_eval.py', [
        'configs/demo/mixedae_vit-tiny-p8_demo.py', pretrained_checkpoint,
        '--data-root', data, '--k', '2', '--batch-size', '2',
        '--num-workers', '0', '--device', 'cpu'])


@pytest.mark.slow
def test_train_under_torchrun_tears_down_on_every_rank(
        repo_root, demo_data,
        tmp_path):
    _run_two_ranks(repo_root, tmp_path, 'tools/train.py', [
        'configs/demo/mixedae_vit-tiny-p8_demo.py',
        '--work-dir', str(tmp_path / 'work'), '--cfg-options',
        f'train_dataloader.dataset.data_root={demo_data}',
        'train_dataloader.batch_size=4', *IN_PROCESS_LOADING,
        'train_cfg.max_iters=1',
        'default_hooks.checkpoint.interval=1'])
