"""The converters refuse NaN/inf weights unless --allow-nonfinite (their
command lines, called in-process; test_converters.py runs them as
subprocesses)."""
import os.path as osp

import pytest
import torch

from conftest import load_tool

extract_backbone = load_tool('model_converters/extract_backbone.py')
publish_model = load_tool('model_converters/publish_model.py')


@pytest.fixture(scope='module')
def diverged_checkpoint(pretrained_checkpoint, tmp_path_factory):
    """The fixture checkpoint with NaN/inf in two encoder tensors."""
    ckpt = torch.load(pretrained_checkpoint, map_location='cpu',
                      weights_only=True)
    ckpt['state_dict']['backbone.cls_token'].fill_(float('nan'))
    ckpt['state_dict']['backbone.layers.0.ln1.weight'][0] = float('inf')
    path = tmp_path_factory.mktemp('diverged') / 'iter_9.pth'
    torch.save(ckpt, path)
    return str(path)


@pytest.mark.parametrize('tool', [extract_backbone, publish_model])
def test_converters_refuse_nonfinite_weights_unless_allowed(
        diverged_checkpoint, tmp_path, tool):
    script = osp.basename(tool.__file__)
    out = str(tmp_path / 'out.pth')
    with pytest.raises(SystemExit) as stop:
        tool.main([diverged_checkpoint, out])
    error = str(stop.value.code)
    assert error.startswith(f'{script}: error: {diverged_checkpoint}: 2 of ')
    prefix = '' if tool is extract_backbone else 'backbone.'
    assert f'({prefix}cls_token, {prefix}layers.0.ln1.weight)' in error
    assert '--allow-nonfinite' in error
    assert list(tmp_path.iterdir()) == []  # nothing written

    assert tool.main([diverged_checkpoint, out, '--allow-nonfinite']) == 0
    written = [p for p in tmp_path.iterdir() if p.suffix == '.pth']
    assert len(written) == 1
    state = torch.load(written[0], map_location='cpu',
                       weights_only=True)['state_dict']
    assert torch.isnan(state[f'{prefix}cls_token']).all()
