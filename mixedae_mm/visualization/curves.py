"""Training curves from mmengine's ``vis_data/scalars.json``: the loss
terms, the learning rate, the homologous accuracy (mean, bold, and per
homologous-attention layer) with its chance level ``1 / G`` as a dashed
line, and the online kNN accuracy (``OnlineKNNHook``).

``tools/analysis_tools/plot_log.py`` is the command line over it.
"""
import glob
import json
import os
import os.path as osp
from collections import defaultdict

__all__ = ['find_scalars', 'read_scalars', 'plot', 'draw']


def find_scalars(path: str) -> str:
    if osp.isfile(path):
        return path
    found = sorted(glob.glob(osp.join(path, 'vis_data', 'scalars.json')) +
                   glob.glob(osp.join(path, '*', 'vis_data', 'scalars.json')))
    if not found:
        raise SystemExit(
            f'error: no vis_data/scalars.json under {path}: give the work dir '
            'of a run that logged at least once (LoggerHook interval)')
    return found[-1]  # timestamps sort in time order


def read_scalars(path: str):
    """``{key: ([step, ...], [value, ...])}`` of every numeric scalar."""
    curves = defaultdict(lambda: ([], []))
    with open(path) as f:
        lines = [(number, line) for number, line in enumerate(f, 1)
                 if line.strip()]
    for index, (number, line) in enumerate(lines):
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            if index == len(lines) - 1:
                continue  # the line a running job is still writing
            raise SystemExit(f'error: {path}, line {number}: not a JSON '
                             'record; the file is damaged') from None
        step = record.get('step', record.get('iter'))
        for key, value in record.items():
            if key in ('step', 'iter', 'epoch') or not isinstance(
                    value, (int, float)):
                continue
            curves[key][0].append(step)
            curves[key][1].append(value)
    return dict(curves)


def plot(path: str, out: str, keys=None, group_size: int = 4) -> str:
    """Draw the curves of ``scalars.json`` at ``path`` into the PNG
    ``out`` (its folder is created); print and return ``out``."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    fig, keys = draw(path, keys, group_size)
    os.makedirs(osp.dirname(osp.abspath(out)), exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    print(f'{out}: {", ".join(keys)} from {path}')
    return out


def draw(path: str, keys=None, group_size: int = 4):
    """``(figure, keys drawn)``: one panel per kind of scalar of the
    ``scalars.json`` at ``path``. A curve of one point is drawn as a
    marker (a line of one point is invisible)."""
    import matplotlib.pyplot as plt

    from mixedae_mm.ops import homologous_accuracy_chance

    curves = read_scalars(path)
    if not curves:
        raise SystemExit(
            f'error: {path} holds no scalars yet: the run has not logged '
            'once (default_hooks.logger.interval iterations); plot it later')
    keys = keys or sorted(
        k for k in curves
        if k.startswith(('loss', 'homo_acc', 'knn_')) or k == 'lr')
    missing = [k for k in keys if k not in curves]
    if missing:
        raise SystemExit(f'error: {path} has no {missing}; it has '
                         f'{sorted(curves)}')
    panels = {
        'loss': [k for k in keys if k.startswith('loss')],
        'learning rate': [k for k in keys if k == 'lr'],
        'homologous accuracy': [k for k in keys if k.startswith('homo_acc')],
        # OnlineKNNHook's
        'online kNN accuracy (%)': [k for k in keys if k.startswith('knn_')],
    }
    other = [k for k in keys if not any(k in v for v in panels.values())]
    if other:
        panels['other'] = other
    panels = {title: ks for title, ks in panels.items() if ks}

    fig, axes = plt.subplots(len(panels), 1, squeeze=False,
                             figsize=(7, 2.6 * len(panels)), sharex=True)
    for ax, (title, panel_keys) in zip(axes[:, 0], panels.items()):
        for key in panel_keys:
            steps, values = curves[key]
            bold = key in ('loss', 'homo_acc')
            ax.plot(steps, values, label=key, linewidth=2 if bold else 1,
                    alpha=1 if bold or not key.startswith('homo_acc_l')
                    else 0.6, marker='o' if len(steps) == 1 else None)
        if title == 'homologous accuracy':
            chance = homologous_accuracy_chance(group_size, group_size)
            ax.axhline(chance, color='k', linestyle='--', linewidth=1,
                       label=f'chance 1/G = {chance:g}')
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, ncol=2)
    axes[-1, 0].set_xlabel('iteration')
    fig.tight_layout()
    return fig, keys
