"""The homologous-selection interventions
(mixedae_mm/analysis/selection_interventions.py and its tool) on the
study's MixedAE at its random initialisation."""
import json

import pytest
import torch

from mixedae_mm.analysis.selection_interventions import (
    ForcedSelectionAttention, forced_keys, intervention, losses_on_mixes)
from mixedae_mm.evaluation.study import ARMS, build_model
from mixedae_mm.models.backbones import HomologousAttention
from conftest import load_tool

CONFIG = ARMS['mixedae']


@pytest.fixture(scope='module')
def model_and_images():
    torch.manual_seed(0)
    model, _ = build_model(CONFIG)
    return model, torch.randn(16, 3, 32, 32)


def test_forced_keys_are_the_partition_they_name():
    from mixedae_mm.ops import sample_partition
    owner = sample_partition(3, 64, 4, generator=torch.Generator()
                             .manual_seed(0))
    generator = torch.Generator().manual_seed(0)
    for choice, wanted_own in (('own', 16), ('other', 0)):
        keys = forced_keys(owner, choice, 2, generator)  # (M, h, N, K)
        assert keys.shape == (3, 2, 64, 16)
        key_owner = owner[:, None, None, :].expand(-1, 2, 64, -1).gather(
            -1, keys)
        own = (key_owner == owner[:, None, :, None]).sum(-1)
        assert (own == wanted_own).all(), choice
    keys = forced_keys(owner, 'random', 2, generator)
    assert keys.shape == (3, 2, 64, 16)
    assert (keys.sort(-1).values.diff(dim=-1) > 0).all()  # K distinct keys


def test_learned_changes_nothing_and_the_attention_comes_back(
        model_and_images):
    model, images = model_and_images
    before = losses_on_mixes(model, images, batch_size=8, seed=3)
    layer = model.backbone.layers[-1]
    original = layer.attn
    with intervention(model.backbone, -1, 'learned') as forced:
        assert isinstance(forced, ForcedSelectionAttention)
        assert forced.qkv is original.qkv  # the same weights
        during = losses_on_mixes(model, images, 8, 3, forced)
    assert layer.attn is original
    assert during == before


@pytest.mark.parametrize('choice,accuracy', [('own', 1.0), ('other', 0.0)])
def test_a_forced_layer_selects_what_it_is_told(model_and_images, choice,
                                                accuracy):
    model, images = model_and_images
    last = len(model.backbone.layers) - 1
    with intervention(model.backbone, last, choice) as forced:
        losses = losses_on_mixes(model, images, 8, 0, forced)
    assert losses[f'homo_acc_l{last}'] == accuracy
    untouched = losses_on_mixes(model, images, 8, 0)
    # the layers before it are not changed
    assert losses['homo_acc_l0'] == untouched['homo_acc_l0']


def test_skip_removes_the_layers_attention_update(model_and_images):
    model, _ = model_and_images
    with intervention(model.backbone, 0, 'skip') as forced:
        out = forced(torch.randn(2, 65, 128), top_k=16)
    assert isinstance(forced, HomologousAttention)
    assert (out == 0).all()


def test_the_tool_writes_every_condition(model_and_images, small_fashion_mnist,
                                         tmp_path, capsys):
    model, _ = model_and_images
    checkpoint = tmp_path / 'random.pth'
    torch.save(dict(state_dict=model.state_dict()), checkpoint)
    out = tmp_path / 'result.json'
    tool = load_tool('analysis_tools/selection_interventions.py')
    tool.main([CONFIG, str(checkpoint), '--data-root', small_fashion_mnist,
               '--layers', '0', '7', '--choices', 'own', 'other',
               '--partition-seeds', '0', '1', '--images', '64',
               '--batch-size', '32', '--out', str(out)])
    result = json.loads(out.read_text())
    assert set(result['conditions']) == {'learned', 'L0 own', 'L0 other',
                                         'L7 own', 'L7 other'}
    assert set(result['conditions']['L7 own']) == {'0', '1'}
    assert len(result['update_ratio']) == 8
    delta = result['deltas']['L7 own']['loss_homo']
    learned = result['conditions']['learned']
    own = result['conditions']['L7 own']
    diffs = [own[s]['loss_homo'] - learned[s]['loss_homo'] for s in '01']
    assert delta['mean'] == pytest.approx(sum(diffs) / 2, abs=1e-5)
    written = capsys.readouterr().out
    tool.main(['--report-only', str(out)])
    report = capsys.readouterr().out
    def table_lines(text):
        return [line for line in text.splitlines() if line.startswith('|')]
    assert table_lines(report) == table_lines(written)  # the same tables
    rows = [line for line in report.splitlines() if line.startswith('| 7 |')]
    assert len(rows) == 2 and rows[0].count('|') == 6  # 5 cells: 3 + own, other


def test_a_missing_checkpoint_is_one_line(tmp_path, capsys):
    tool = load_tool('analysis_tools/selection_interventions.py')
    with pytest.raises(SystemExit) as stop:
        tool.main([CONFIG, str(tmp_path / 'missing.pth')])
    message = str(stop.value.code)
    assert message.startswith('selection_interventions.py: error: ')
    assert '\n' not in message


def test_a_layer_that_does_not_exist_is_one_line(model_and_images):
    model, _ = model_and_images
    with pytest.raises(ValueError, match='layer 8 does not exist: the '
                       'encoder has layers 0-7'):
        with intervention(model.backbone, 8, 'own'):
            pass


def test_an_out_folder_that_does_not_exist_is_refused_first(tmp_path):
    """Checked before anything is measured (not after minutes of work)."""
    tool = load_tool('analysis_tools/selection_interventions.py')
    with pytest.raises(SystemExit) as stop:
        tool.main([CONFIG, str(tmp_path / 'missing.pth'), '--out',
                   str(tmp_path / 'no' / 'result.json')])
    assert 'the folder of --out' in str(stop.value.code)


def test_results_page_quotes_the_committed_run(repo_root):
    """docs/results.md's table is what --report-only prints from the
    committed JSON."""
    import glob
    import os.path as osp

    from mixedae_mm.analysis.selection_interventions import markdown_deltas
    paths = glob.glob(osp.join(repo_root, 'docs/results/selection/*.json'))
    assert paths
    with open(osp.join(repo_root, 'docs/results.md')) as f:
        page = f.read()
    for path in paths:
        with open(path) as f:
            result = json.load(f)
        assert result['commit']
        assert markdown_deltas(result) in page, path
