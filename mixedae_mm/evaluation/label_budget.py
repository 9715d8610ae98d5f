"""Does the fine-tune gain hold with more labels? The study's MAE and
MixedAE encoders fine-tuned with 200, 1,000 and all 6,000 labelled images
per class (``tools/analysis_tools/label_budget_study.py`` runs it;
``docs/results.md`` reports it).

Each budget is a study of its own (:func:`~.study.run_arm`) in
``OUT/per_class_<n>/``, evaluating the encoders that an earlier study
pretrained (``--pretrain-dir``; a missing one is pretrained there first).
"""
import os.path as osp
import statistics
from typing import Dict, List, Optional, Sequence

from . import study
from .seed_stats import difference_text, mean_and_range

#: labelled images per class -> fine-tune epochs, the same for every arm.
#: 200 is the study's own budget and schedule (10 epochs, 310 steps of 64
#: images). The larger budgets train for fewer epochs so that one run stays
#: within about 15 minutes on 2 cores: 1,000 a class 4 epochs (624 steps),
#: all 6,000 a class 2 epochs (1,874 steps), the fewest that leave a cosine
#: phase after the fine-tune's one-epoch warm-up.
BUDGETS = {200: 10, 1000: 4, 6000: 2}
#: the arms whose difference is the question
ARMS = ('mae', 'mixedae')
#: pretraining seeds per budget (the issue: at least 2 at each size, 3
#: where it is cheap; the largest budget costs about 3x the others)
DEFAULT_SEEDS = {200: (0, 1, 2), 1000: (0, 1, 2), 6000: (0, 1)}
#: the frozen probes' subset: the study's 1,000 a class, or the whole
#: fine-tuning set when that is larger (it is drawn inside this subset)
FROZEN_PER_CLASS = 1000


def budget_dir(out: str, per_class: int) -> str:
    return osp.join(out, f'per_class_{per_class}')


def schedule(budgets: Optional[Sequence[int]] = None,
             epochs: Optional[Sequence[int]] = None) -> Dict[int, int]:
    """``{labelled images per class: fine-tune epochs}``, smallest budget
    first: ``BUDGETS``, the given budgets with their ``BUDGETS`` epochs, or
    each budget with its own ``epochs``."""
    if budgets is None:
        budgets = list(BUDGETS)
    if epochs is None:
        unknown = [n for n in budgets if n not in BUDGETS]
        if unknown:
            raise ValueError(
                f'no fine-tune schedule for {unknown[0]} labelled images '
                f'per class: choose from {", ".join(map(str, BUDGETS))} or '
                'give each budget its epochs with --finetune-epochs')
        epochs = [BUDGETS[n] for n in budgets]
    if len(epochs) != len(budgets):
        raise ValueError(f'{len(budgets)} budgets but {len(epochs)} '
                         '--finetune-epochs: give one per budget')
    return dict(sorted(zip(budgets, epochs)))


def planned_runs(budgets: Sequence[int],
                 arms: Optional[Sequence[str]] = None,
                 seeds: Optional[Sequence[int]] = None) -> List[tuple]:
    """``[(per_class, arm, seed), ...]`` in the order they are made: budget
    by budget as given, each with ``seeds`` (default: its
    ``DEFAULT_SEEDS``, else 0 and 1) and every arm of ``arms`` (default:
    MAE and MixedAE) per seed."""
    arms = list(arms or ARMS)
    return [(per_class, arm, seed) for per_class in budgets
            for seed in (seeds if seeds is not None
                         else DEFAULT_SEEDS.get(per_class, (0, 1)))
            for arm in arms]


# ----------------------------------------------------------------- reports
def read_results(out_dir: str) -> List[dict]:
    import glob
    return [result for folder in sorted(glob.glob(
        osp.join(out_dir, 'per_class_*'))) for result in
        study.read_results(folder)]


def _by_budget(results: List[dict]) -> Dict[int, Dict[str, List[dict]]]:
    table: Dict[int, Dict[str, List[dict]]] = {}
    for result in results:
        runs = table.setdefault(result['finetune_per_class'], {})
        runs.setdefault(result['arm'], []).append(result)
    return dict(sorted(table.items()))


def markdown_table(results: List[dict]) -> str:
    """Per budget: fine-tune top-1 of MAE and MixedAE (mean, min–max over
    seeds) and its cost; then MixedAE minus MAE with Welch's 95% interval
    per budget."""
    header = ['labelled images per class', 'fine-tune epochs', 'MAE seeds',
              'MAE', 'MixedAE seeds', 'MixedAE', 'fine-tune min']
    lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
    differences = ['']
    for per_class, arms in _by_budget(results).items():
        runs = [r for group in arms.values() for r in group]
        row = [f'{per_class:,}', '/'.join(
            map(str, sorted({r['finetune_epochs'] for r in runs})))]
        for arm in ARMS:
            row += [', '.join(str(r['seed']) for r in arms.get(arm, [])),
                    mean_and_range([r['finetune_top1']
                                    for r in arms.get(arm, [])], 2)
                    if arm in arms else '–']
        row.append(mean_and_range([r['finetune_seconds'] / 60
                                   for r in runs]))
        lines.append('| ' + ' | '.join(row) + ' |')
        if all(arm in arms for arm in ARMS):
            differences.append(
                f'- {per_class:,} labelled images per class, fine-tune '
                'top-1, mixedae − mae: ' + difference_text(
                    *([r['finetune_top1'] for r in arms[arm]]
                      for arm in ('mixedae', 'mae'))))
    return '\n'.join(lines + differences) + '\n'


def plot(results: List[dict], out_path: str) -> None:
    """Fine-tune top-1 per label budget (evenly spaced, smallest first): a
    dot per seed, a line through the means, per arm."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    table = _by_budget(results)
    figure, ax = plt.subplots(figsize=(6, 4))
    for index, arm in enumerate(ARMS):
        colour = plt.cm.tab10(index)
        offset = 0.06 * (2 * index - 1)  # keeps the two arms' dots apart
        xs, means = [], []
        for x, per_class in enumerate(table):
            values = [r['finetune_top1']
                      for r in table[per_class].get(arm, [])]
            if not values:
                continue
            xs.append(x + offset)
            means.append(statistics.fmean(values))
            ax.scatter([x + offset] * len(values), values, color=colour,
                       s=14, zorder=3)
        ax.plot(xs, means, color=colour, marker='_', markersize=14,
                label=arm)
    ax.set_xticks(range(len(table)), [f'{n:,}' for n in table])
    ax.set_xlim(-0.5, len(table) - 0.5)
    ax.set_xlabel('labelled training images per class')
    ax.set_ylabel('fine-tune top-1 (%)')
    ax.set_title('Fashion-MNIST fine-tune by label budget')
    ax.legend()
    figure.tight_layout()
    figure.savefig(out_path, dpi=90)
    plt.close(figure)
