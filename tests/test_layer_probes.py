"""Frozen features layer by layer (evaluation/layer_probes.py,
tools/analysis_tools/layer_probes.py): the rows are the backbone's own
tokens, the last row is the study's frozen evaluation, the report is
rebuilt from the JSON files, and a missing pretraining is one line."""
import json
import os.path as osp

import pytest
import torch
from torch import nn

from mixedae_mm.evaluation.layer_probes import (FINAL_NORM, PROBES,
                                                encode_layers, layer_tokens,
                                                probe_layers, row_names)
from conftest import assert_results_page_shows, load_tool, readme_sentences

TOOL = 'analysis_tools/layer_probes.py'
TINY = dict(embed_dims=32, num_layers=3, num_heads=2, feedforward_channels=64)


def tiny_backbone(kind):
    """A random 3-layer ViT on 16x16 images, every layer an output."""
    torch.manual_seed(0)
    if kind == 'mixedae':
        from mixedae_mm.models import MixedAEViT
        backbone = MixedAEViT(arch=TINY, img_size=16, patch_size=4,
                              mixing=False, out_indices=(0, 1, 2))
    else:
        from mmpretrain.models import MAEViT
        backbone = MAEViT(arch=TINY, img_size=16, patch_size=4,
                          out_indices=(0, 1, 2))
    backbone.init_weights()
    backbone.eval()  # (mmpretrain's ViT.train returns None: no chaining)
    return backbone


def tiny_data(n, seed):
    """Images whose mean depends on their class (3 classes), so the probes
    score something other than chance."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 3
    images = torch.randn(n, 3, 16, 16, generator=generator)
    return images + labels[:, None, None, None] * 0.7, labels


@pytest.mark.parametrize('kind', ['mixedae', 'mmpretrain_mae'])
@torch.no_grad()
def test_every_row_is_the_backbones_own_output(kind):
    """Layers 1..L-1 are the backbone's outputs at those indices, the last
    row its output at the last index (after the final norm), and the last
    layer's row is that output before the norm."""
    backbone = tiny_backbone(kind)
    images, _ = tiny_data(6, seed=1)
    own = backbone(images, mask=None)
    rows = layer_tokens(backbone, images)
    assert len(rows) == 4 and rows[0].shape == (6, 17, 32)
    for index in range(2):
        torch.testing.assert_close(rows[index], own[index], rtol=0, atol=0)
    torch.testing.assert_close(rows[-1], own[-1], rtol=0, atol=0)
    torch.testing.assert_close(backbone.ln1(rows[2]), rows[-1], rtol=0,
                               atol=0)
    assert not any(layer._forward_hooks for layer in backbone.layers)


def test_the_final_norm_row_is_the_studys_frozen_evaluation():
    """The last row's probes are, to the bit, the numbers
    ``study.evaluate_encoder`` reports for the same encoder; the features
    are taken in eval mode and the mode is restored."""
    from mixedae_mm.evaluation.probes import encode
    from mixedae_mm.evaluation.study import evaluate_encoder
    backbone = tiny_backbone('mixedae')
    backbone.train()
    train_images, train_labels = tiny_data(60, seed=2)
    test_images, test_labels = tiny_data(30, seed=3)
    train = encode_layers(backbone, train_images, batch_size=25)
    test = encode_layers(backbone, test_images, batch_size=25)
    assert backbone.training
    assert train['cls'].shape == (4, 60, 32)
    study_features = encode(backbone, train_images)
    for feature in ('cls', 'mean'):
        torch.testing.assert_close(train[feature][-1],
                                   study_features[feature], rtol=0, atol=0)
    rows = probe_layers(train, train_labels, test, test_labels, seed=5,
                        log=lambda message: None)
    assert [row['name'] for row in rows] == row_names(3)
    assert rows[-1]['name'] == FINAL_NORM

    model = nn.Module()
    model.backbone = backbone  # fine-tuning changes it: last
    study = evaluate_encoder(
        model, dict(train_images=train_images, train_labels=train_labels,
                    test_images=test_images, test_labels=test_labels,
                    finetune_index=torch.arange(12)),
        finetune=dict(epochs=1, batch_size=6), seed=5,
        log=lambda message: None)
    assert rows[-1]['linear_mean'] == study['linear_top1']
    assert rows[-1]['knn_cls'] == study['knn_top1']
    assert rows[-1]['knn_mean'] == study['knn_mean_top1']
    assert len({row['knn_cls'] for row in rows}) > 1  # not all at chance


def _result(arm, seed, values):
    """A run's JSON as the tool writes it, every probe of row i at
    ``values[i]``."""
    names = row_names(len(values) - 1)
    return dict(arm=arm, seed=seed, rows=[
        dict(name=name, **{probe: value for probe in PROBES})
        for name, value in zip(names, values)], final_norm_vs_study=None)


def test_report_only_rebuilds_the_table_from_the_json_files(tmp_path):
    out = tmp_path / 'layer_probes'
    out.mkdir()
    for result in (_result('mae', 0, [70., 80., 78.]),
                   _result('mae', 1, [72., 82., 77.]),
                   _result('mixedae', 0, [71., 79., 83.])):
        with open(out / f'{result["arm"]}_seed{result["seed"]}.json',
                  'w') as f:
            json.dump(result, f)
    plot = tmp_path / 'images' / 'layer_probes.png'
    load_tool(TOOL).main(['--report-only', '--out', str(out), '--plot',
                          str(plot)])
    table = (out / 'layer_probes.md').read_text()
    assert '### mae (seeds: 0, 1)' in table
    assert ('| layer 2 | 81.0 (80.0–82.0) | 81.0 (80.0–82.0) | '
            '81.0 (80.0–82.0) | 81.0 (80.0–82.0) |') in table
    assert '| final norm | 83.0 | 83.0 | 83.0 | 83.0 |' in table
    assert ('| mae | 2 | layer 2: 81.0 (80.0–82.0) (per seed: layer 2, '
            'layer 2)') in table
    assert ('- linear (mean patch): mixedae (final norm) − mae (layer 2) = '
            '+2.00 (1 vs 2 seeds; no interval: it needs 2 seeds a side)'
            ) in table
    assert plot.stat().st_size > 10000


def _pretrain_folder(root, arm, seed, done):
    work_dir = root / f'{arm}_seed{seed}' / 'pretrain'
    work_dir.mkdir(parents=True)
    (work_dir / 'iter_2.pth').write_bytes(b'')
    (work_dir / 'last_checkpoint').write_text(str(work_dir / 'iter_2.pth'))
    (work_dir / 'timing.json').write_text(json.dumps(dict(done=done)))
    return work_dir


def test_a_missing_or_unfinished_pretraining_is_one_line(tmp_path):
    runs = tmp_path / 'runs'
    _pretrain_folder(runs, 'mae', 0, done=True)
    running = _pretrain_folder(runs, 'mixedae', 0, done=False)
    tool = load_tool(TOOL)
    with pytest.raises(SystemExit) as stop:
        tool.main(['--pretrain-dir', str(runs), '--arms', 'mae', 'mixedae',
                   '--seeds', '0', '1', '--out', str(tmp_path / 'out')])
    message = stop.value.code
    assert '\n' not in message
    missing = osp.join(str(runs), 'mae_seed1', 'pretrain')
    assert message.startswith(
        f'layer_probes.py: error: no finished pretraining in {running} '
        f'(timing.json: not done), {missing} (no last_checkpoint), ')
    assert message.endswith(
        f'tools/analysis_tools/ablation_study.py --out {tmp_path} --arms '
        'mixedae mae --seeds 0 1 (this tool pretrains nothing)')
    assert not (tmp_path / 'out').exists()  # nothing loaded or written


def test_the_tool_probes_a_study_checkpoint_once(small_fashion_mnist,
                                                 repo_root, tmp_path,
                                                 capsys):
    """A random MixedAE study encoder in a finished run folder, on 100
    training and 100 test images: 9 rows, the commit and the checkpoint
    recorded, the final-norm row against the run's ``result.json``; a
    second call skips it."""
    from mixedae_mm.evaluation.study import ARMS, build_model
    model, _ = build_model(osp.join(repo_root, ARMS['mixedae']))
    runs = tmp_path / 'runs'
    work_dir = _pretrain_folder(runs, 'mixedae', 0, done=True)
    torch.save(dict(state_dict=model.state_dict()), work_dir / 'iter_2.pth')
    (work_dir.parent / 'result.json').write_text(json.dumps(dict(
        linear_top1=50., knn_top1=40., knn_mean_top1=None)))
    out = tmp_path / 'out'
    command = ['--pretrain-dir', str(runs), '--arms', 'mixedae', '--seeds',
               '0', '--out', str(out), '--plot', str(tmp_path / 'p.png'),
               '--data-root', small_fashion_mnist, '--frozen-per-class', '10']
    tool = load_tool(TOOL)
    tool.main(command)
    result = json.loads((out / 'mixedae_seed0.json').read_text())
    assert [row['name'] for row in result['rows']] == row_names(8)
    assert len(result['commit']) >= 40
    assert len(result['checkpoint_sha256']) == 64
    assert result['train_images'] == 100 and result['test_images'] == 100
    final = result['rows'][-1]
    assert result['final_norm_vs_study'] == dict(
        linear_mean=dict(here=final['linear_mean'], study=50.,
                         difference=final['linear_mean'] - 50.),
        knn_cls=dict(here=final['knn_cls'], study=40.,
                     difference=final['knn_cls'] - 40.))
    assert 'layer 8 (8/9)' in capsys.readouterr().out
    tool.main(command)
    assert 'mixedae seed 0: done already' in capsys.readouterr().out
    assert '| final norm |' in (out / 'layer_probes.md').read_text()


def test_the_committed_table_is_the_committed_runs(repo_root):
    """docs/results/layer_probes/layer_probes.md is the table the tool
    writes from the committed JSON files, and docs/results.md quotes every
    line of it."""
    from mixedae_mm.evaluation.layer_probes import (markdown_table,
                                                    read_results)
    out = osp.join(repo_root, 'docs', 'results', 'layer_probes')
    results = read_results(out)
    assert results
    with open(osp.join(out, 'layer_probes.md')) as f:
        table = f.read()
    assert table == markdown_table(results)
    assert_results_page_shows(table, after='# Frozen features layer by layer')


def test_readme_frozen_feature_sentence_is_the_committed_runs(repo_root):
    """README: probed layer by layer (N seeds each), MixedAE's features
    fall only in its last layers; at each arm's best layer the linear
    probes' 95% intervals for MixedAE minus MAE include 0 and the kNN
    probes' lie below 0; computed from the committed JSON files."""
    from mixedae_mm.evaluation.seed_stats import welch_interval
    from mixedae_mm.evaluation.layer_probes import (_by_arm, best_rows,
                                                    read_results)
    grouped = _by_arm(read_results(
        osp.join(repo_root, 'docs', 'results', 'layer_probes')))
    mae, mixedae = grouped['mae'], grouped['mixedae']
    assert len(mae) == len(mixedae)
    last_layer_and_norm = [row['name'] for row in mixedae[0]['rows'][-2:]]
    assert last_layer_and_norm[-1] == FINAL_NORM
    intervals = {}
    for probe in PROBES:
        best = best_rows(mixedae, probe)
        assert best['name'] not in last_layer_and_norm, probe
        intervals[probe] = welch_interval(best['values'],
                                          best_rows(mae, probe)['values'])
    for probe in ('linear_mean', 'linear_cls'):  # "cannot tell"
        assert intervals[probe]['low'] < 0 < intervals[probe]['high'], probe
    for probe in ('knn_mean', 'knn_cls'):  # "stays lower"
        assert intervals[probe]['high'] < 0, probe

    def quoted(probe):
        x = intervals[probe]
        return (f"{x['difference']:+.2f}, 95% interval {x['low']:+.2f} to "
                f"{x['high']:+.2f}")
    readme = readme_sentences()
    assert (f'Probed layer by layer ({len(mae)} seeds each), its features '
            "fall only in its last layers: at each arm's best layer the "
            'linear probes cannot tell MixedAE from MAE '
            f"({quoted('linear_mean')} on the mean token), while kNN stays "
            f"lower ({quoted('knn_cls')} on the cls token)") in readme
