"""The converters refuse NaN/inf weights unless --allow-nonfinite."""
import subprocess
import sys

import pytest
import torch


def run_cli(repo_root, script, *args):
    return subprocess.run(
        [sys.executable, f'tools/model_converters/{script}', *map(str, args)],
        cwd=repo_root, capture_output=True, text=True)


@pytest.fixture(scope='module')
def diverged_checkpoint(pretrained_checkpoint, tmp_path_factory):
    """The fixture checkpoint with NaN in two encoder tensors."""
    ckpt = torch.load(pretrained_checkpoint, map_location='cpu',
                      weights_only=True)
    ckpt['state_dict']['backbone.cls_token'].fill_(float('nan'))
    ckpt['state_dict']['backbone.layers.0.ln1.weight'][0] = float('inf')
    path = tmp_path_factory.mktemp('diverged') / 'iter_9.pth'
    torch.save(ckpt, path)
    return path


@pytest.mark.parametrize('script', ['extract_backbone.py', 'publish_model.py'])
def test_converters_refuse_nonfinite_weights_unless_allowed(
        repo_root, diverged_checkpoint, tmp_path, script):
    out = tmp_path / 'out.pth'
    proc = run_cli(repo_root, script, diverged_checkpoint, out)
    assert proc.returncode != 0
    error = proc.stderr.strip().splitlines()[-1]
    assert error.startswith(f'{script}: error: {diverged_checkpoint}: 2 of ')
    prefix = '' if script == 'extract_backbone.py' else 'backbone.'
    assert f'({prefix}cls_token, {prefix}layers.0.ln1.weight)' in error
    assert '--allow-nonfinite' in error
    assert list(tmp_path.iterdir()) == []  # nothing written

    proc = run_cli(repo_root, script, diverged_checkpoint, out,
                   '--allow-nonfinite')
    assert proc.returncode == 0, proc.stderr
    written = [p for p in tmp_path.iterdir() if p.suffix == '.pth']
    assert len(written) == 1
    state = torch.load(written[0], map_location='cpu',
                       weights_only=True)['state_dict']
    assert torch.isnan(state[f'{prefix}cls_token']).all()
