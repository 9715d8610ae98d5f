"""Frozen features layer by layer: the study's linear probe and kNN on the
tokens after every encoder layer (issue 33; ``tools/analysis_tools/
layer_probes.py`` runs it, ``docs/results.md`` "Frozen features layer by
layer" reports it).

The tokens come from one plain forward (no mixing, no masking: the path
:func:`probes.encode` and the study's frozen evaluation use), read after
each layer by forward hooks; the last row is the backbone's own output
(after the final norm), the features the study's frozen numbers are
measured on. Each row is probed exactly as
:func:`study.evaluate_encoder` probes that output: :func:`probes.
linear_probe` with the run's seed and :func:`study.knn_top1`.
"""
import math
import statistics
from typing import Callable, Dict, List, Optional

import torch
from torch import Tensor, nn

from ..utils import eval_mode
from .seed_stats import mean_and_range, welch_interval
from .knn import pool_tokens
from .probes import linear_probe, plain_tokens
from .study import ARMS, knn_top1, preprocess

#: the two pooled features: the cls token and the mean patch token
FEATURES = ('mean', 'cls')
#: row keys: probe + feature
PROBES = ('linear_mean', 'linear_cls', 'knn_mean', 'knn_cls')
PROBE_TITLES = dict(linear_mean='linear (mean patch)',
                    linear_cls='linear (cls)', knn_mean='kNN (mean patch)',
                    knn_cls='kNN (cls)')
#: this module's probe -> the study's metric on the final-norm features
#: (``result.json``); the study has no linear probe on the cls token
STUDY_METRICS = dict(linear_mean='linear_top1', knn_cls='knn_top1',
                     knn_mean='knn_mean_top1')
FINAL_NORM = 'final norm'


def row_names(num_layers: int) -> List[str]:
    """``['layer 1', ..., 'layer L', 'final norm']``: the rows of
    :func:`layer_tokens` (layers counted from 1)."""
    return [f'layer {i}' for i in range(1, num_layers + 1)] + [FINAL_NORM]


def layer_tokens(backbone: nn.Module, images: Tensor) -> List[Tensor]:
    """The tokens of ``images`` ``(B, C, H, W)`` at every depth, from one
    plain forward (:func:`probes.plain_tokens`: no mixing, no masking):
    ``L + 1`` tensors ``(B, 1 + N, D)``, the output of each of the ``L``
    encoder layers (before the final norm), then the backbone's output
    (after the final norm). Runs in the mode the caller set: use
    :func:`encode_layers` for frozen features."""
    outputs = []
    hooks = [layer.register_forward_hook(
        lambda module, args, output: outputs.append(output))
        for layer in backbone.layers]
    try:
        final = plain_tokens(backbone, images)
    finally:
        for hook in hooks:
            hook.remove()
    if len(outputs) != len(backbone.layers):
        raise RuntimeError(f'{len(outputs)} layer outputs from a forward of '
                           f'{len(backbone.layers)} layers')
    return outputs + [final]


@torch.no_grad()
def encode_layers(backbone: nn.Module, images: Tensor,
                  batch_size: int = 500) -> Dict[str, Tensor]:
    """Frozen features of ``images`` ``(n, C, H, W)`` at every depth, in
    eval mode: ``{'cls': (L + 1, n, D), 'mean': (L + 1, n, D)}``, the cls
    token and the mean patch token (:func:`knn.pool_tokens`) of each row of
    :func:`layer_tokens`; the last row is :func:`probes.encode`'s."""
    pooled = {feature: [] for feature in FEATURES}
    with eval_mode(backbone):
        for chunk in images.split(batch_size):
            rows = layer_tokens(backbone, chunk)
            for feature in FEATURES:
                pooled[feature].append(torch.stack(
                    [pool_tokens(tokens, feature) for tokens in rows]))
    return {feature: torch.cat(chunks, dim=1)
            for feature, chunks in pooled.items()}


def probe_layers(train: Dict[str, Tensor], train_labels: Tensor,
                 test: Dict[str, Tensor], test_labels: Tensor, *, seed: int,
                 log: Callable[[str], None] = print) -> List[dict]:
    """Per row of :func:`encode_layers`' features (``train`` ``(R, n, D)``
    per feature, labels ``(n,)``; ``test`` likewise): the study's linear
    probe (:func:`probes.linear_probe`, its defaults, ``seed``) and kNN
    (:func:`study.knn_top1`) on the mean patch token and on the cls token.
    Returns ``[{'name', 'linear_mean', 'linear_cls', 'knn_mean',
    'knn_cls'}, ...]``, top-1 in percent, one dict per row."""
    num_rows = train['cls'].shape[0]
    rows = []
    for index, name in enumerate(row_names(num_rows - 1)):
        row = dict(name=name)
        for feature in FEATURES:
            row[f'linear_{feature}'] = linear_probe(
                train[feature][index], train_labels, test[feature][index],
                test_labels, seed=seed)
            row[f'knn_{feature}'] = knn_top1(
                train[feature][index], train_labels, test[feature][index],
                test_labels)
        rows.append(row)
        log(f'{name} ({index + 1}/{num_rows}): ' + '  '.join(
            f'{PROBE_TITLES[p]} {row[p]:.2f}' for p in PROBES))
    return rows


def probe_study_encoder(model, cfg, data: Dict[str, Tensor], *, seed: int,
                        log: Callable[[str], None] = print) -> List[dict]:
    """:func:`probe_layers` of ``model``'s backbone on
    :func:`study.load_study_data`'s raw images, turned into inputs through
    ``cfg``'s test pipeline as :func:`study.evaluate_on_study_data` does."""
    inputs = {split: preprocess(data[f'{split}_raw'], cfg, model)
              for split in ('train', 'test')}
    log(f'encoding {len(inputs["train"])} + {len(inputs["test"])} images at '
        f'{len(model.backbone.layers) + 1} depths')
    train = encode_layers(model.backbone, inputs['train'])
    test = encode_layers(model.backbone, inputs['test'])
    return probe_layers(train, data['train_labels'], test,
                        data['test_labels'], seed=seed, log=log)


def compare_with_study(rows: List[dict], study_result: dict) -> dict:
    """The final-norm row minus the study's frozen numbers in the run
    folder's ``result.json`` (of the same checkpoint unless the folder was
    pretrained again since), per probe the study measures:
    ``{probe: {'here', 'study', 'difference'}}``."""
    final = rows[-1]
    assert final['name'] == FINAL_NORM, final['name']
    return {probe: dict(here=final[probe], study=study_result[metric],
                        difference=final[probe] - study_result[metric])
            for probe, metric in STUDY_METRICS.items()
            if study_result.get(metric) is not None}


# ----------------------------------------------------------------- reports
def _by_arm(results: List[dict]) -> Dict[str, List[dict]]:
    """``{arm: [result, ...]}`` in the study's arm order, seeds sorted."""
    grouped = {}
    for arm in ARMS:
        runs = sorted((r for r in results if r['arm'] == arm),
                      key=lambda r: r['seed'])
        if runs:
            grouped[arm] = runs
    return grouped


def _values(runs: List[dict], index: int, probe: str) -> List[float]:
    return [run['rows'][index][probe] for run in runs]


def best_rows(runs: List[dict], probe: str) -> dict:
    """The row with the highest mean over ``runs`` (seeds of one arm) for
    ``probe``: ``{'name', 'values' (per seed at that row), 'per_seed'
    (each seed's own best row name)}``; of tied rows, the shallower.
    Rows are chosen on the test
    images, so a best value is an optimistic estimate for every arm
    alike."""
    names = [row['name'] for row in runs[0]['rows']]
    means = [statistics.fmean(_values(runs, i, probe))
             for i in range(len(names))]
    best = max(range(len(names)), key=lambda i: means[i])
    per_seed = [max(run['rows'], key=lambda row: row[probe])['name']
                for run in runs]
    return dict(name=names[best], values=_values(runs, best, probe),
                per_seed=per_seed)


def markdown_table(results: List[dict]) -> str:
    """Per arm, one row per depth: every probe's mean (min–max over
    seeds); then each arm's best row per probe, MixedAE's best minus MAE's
    best (a Welch interval with 2 seeds a side or more), and the final-norm
    row against the study's own numbers."""
    grouped = _by_arm(results)
    lines = []
    for arm, runs in grouped.items():
        seeds = ', '.join(str(r['seed']) for r in runs)
        lines += [f'### {arm} (seeds: {seeds})', '',
                  '| depth | ' + ' | '.join(PROBE_TITLES[p] for p in PROBES) +
                  ' |', '|---' * (len(PROBES) + 1) + '|']
        for index, row in enumerate(runs[0]['rows']):
            cells = [mean_and_range(_values(runs, index, probe))
                     for probe in PROBES]
            lines.append(f'| {row["name"]} | ' + ' | '.join(cells) + ' |')
        lines.append('')
    lines += ['### Best depth per arm (by the mean over seeds)', '',
              '| arm | seeds | ' + ' | '.join(PROBE_TITLES[p] for p in PROBES)
              + ' |', '|---' * (len(PROBES) + 2) + '|']
    for arm, runs in grouped.items():
        cells = []
        for probe in PROBES:
            best = best_rows(runs, probe)
            cell = f'{best["name"]}: {mean_and_range(best["values"])}'
            if len(runs) > 1:
                cell += f' (per seed: {", ".join(best["per_seed"])})'
            cells.append(cell)
        lines.append(f'| {arm} | {len(runs)} | ' + ' | '.join(cells) + ' |')
    lines.append('')
    if 'mae' in grouped and 'mixedae' in grouped:
        lines += ['### MixedAE\'s best depth minus MAE\'s best depth', '']
        for probe in PROBES:
            a = best_rows(grouped['mixedae'], probe)
            b = best_rows(grouped['mae'], probe)
            difference = (statistics.fmean(a['values']) -
                          statistics.fmean(b['values']))
            text = (f'- {PROBE_TITLES[probe]}: mixedae ({a["name"]}) − mae '
                    f'({b["name"]}) = {difference:+.2f} '
                    f'({len(a["values"])} vs {len(b["values"])} seeds')
            interval = welch_interval(a['values'], b['values'])
            if interval is None:
                text += '; no interval: it needs 2 seeds a side)'
            else:
                text += (f'; 95% Welch interval {interval["low"]:+.2f} to '
                         f'{interval["high"]:+.2f})')
            lines.append(text)
        lines.append('')
    checked = [r for r in results if r.get('final_norm_vs_study')]
    if checked:
        lines += ['### Final-norm row against the study\'s frozen numbers '
                  '(the run folder\'s result.json)', '',
                  '| arm | seed | ' + ' | '.join(
                      f'{PROBE_TITLES[p]} here / study' for p in STUDY_METRICS)
                  + ' |', '|---' * (len(STUDY_METRICS) + 2) + '|']
        for run in sorted(checked, key=lambda r: (list(ARMS).index(r['arm']),
                                                  r['seed'])):
            check = run['final_norm_vs_study']
            lines.append(f'| {run["arm"]} | {run["seed"]} | ' + ' | '.join(
                f'{check[p]["here"]:.2f} / {check[p]["study"]:.2f} '
                f'({check[p]["difference"]:+.2f})' if p in check else '–'
                for p in STUDY_METRICS) + ' |')
        lines.append('')
    return '\n'.join(lines)


def plot(results: List[dict], path: str) -> None:
    """One panel per probe: accuracy against depth, a line per arm at the
    mean over seeds and a band from the lowest to the highest seed (points
    per seed); the final norm is the last point."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    grouped = _by_arm(results)
    colours = {arm: plt.cm.tab10(i) for i, arm in enumerate(ARMS)}
    figure, axes = plt.subplots(1, len(PROBES),
                                figsize=(4.4 * len(PROBES), 4))
    for ax, probe in zip(axes, PROBES):
        for arm, runs in grouped.items():
            names = [row['name'] for row in runs[0]['rows']]
            depth = list(range(1, len(names) + 1))
            per_row = [_values(runs, i, probe) for i in range(len(names))]
            ax.plot(depth, [statistics.fmean(v) for v in per_row],
                    marker='o', markersize=3, color=colours[arm],
                    label=f'{arm} ({len(runs)} seed'
                    f'{"s" if len(runs) > 1 else ""})')
            if len(runs) > 1:
                ax.fill_between(depth, [min(v) for v in per_row],
                                [max(v) for v in per_row],
                                color=colours[arm], alpha=0.2)
        ax.set_xticks(depth, [n.replace('layer ', '') if n != FINAL_NORM
                              else 'norm' for n in names])
        ax.set_xlabel('encoder layer (norm: the final norm\'s output)')
        ax.set_title(PROBE_TITLES[probe] + ' top-1 (%)')
        low = min(row[probe] for r in results for row in r['rows'])
        ax.set_ylim(max(0, math.floor(low) - 1), None)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)


def read_results(out_dir: str) -> List[dict]:
    """Every ``<arm>_seed<s>.json`` in ``out_dir``."""
    import glob
    import json
    import os.path as osp
    return [json.load(open(path)) for path in
            sorted(glob.glob(osp.join(out_dir, '*_seed*.json')))]


def study_result(run_dir: str) -> Optional[dict]:
    """The study's ``result.json`` of a run folder, if there is one."""
    import json
    import os.path as osp
    path = osp.join(run_dir, 'result.json')
    if not osp.isfile(path):
        return None
    with open(path) as f:
        return json.load(f)
