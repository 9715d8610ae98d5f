"""Atomic checkpoint writes: a file is complete or absent."""
import os
import os.path as osp

import pytest
import torch
from mmengine.fileio import get_file_backend

from conftest import short_demo_run
from mixedae_mm.checkpoints import atomic_write
from mixedae_mm.engine.fileio import AtomicLocalBackend


def test_atomic_write_replaces_whole_file(tmp_path):
    target = tmp_path / 'sub' / 'iter_1.pth'
    atomic_write(target, b'first')
    atomic_write(target, b'second version')
    assert target.read_bytes() == b'second version'
    assert os.listdir(target.parent) == ['iter_1.pth']  # no temp left


def test_failed_write_keeps_the_old_file(tmp_path, monkeypatch):
    target = tmp_path / 'iter_1.pth'
    atomic_write(target, b'complete checkpoint')

    def disk_full(fd):
        raise OSError(28, 'No space left on device')

    monkeypatch.setattr(os, 'fsync', disk_full)
    with pytest.raises(OSError, match='No space left'):
        atomic_write(target, b'half a checkp')
    assert target.read_bytes() == b'complete checkpoint'
    assert os.listdir(tmp_path) == ['iter_1.pth']


def test_demo_run_saves_through_the_atomic_backend(demo_data, tmp_path,
                                                  monkeypatch):
    written = []
    put = AtomicLocalBackend.put

    def spy(self, obj, filepath):
        written.append(osp.basename(filepath))
        put(self, obj, filepath)

    monkeypatch.setattr(AtomicLocalBackend, 'put', spy)
    short_demo_run(tmp_path, demo_data, iters=1, batch_size=4,
                   name='atomic_io').train()

    assert written == ['iter_1.pth']
    assert not [f for f in os.listdir(tmp_path) if f.endswith('.tmp')]
    state = torch.load(tmp_path / 'iter_1.pth', weights_only=True)
    assert state['meta']['iter'] == 1
