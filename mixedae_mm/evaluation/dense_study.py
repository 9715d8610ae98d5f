"""The dense study: every study encoder transferred to segmentation (mmseg
UperNet) and to detection / instance segmentation (mmdet Mask R-CNN) on
scenes of Fashion-MNIST items: one run (:func:`run_transfer`), the per-run
results, the table, the interval for MixedAE minus MAE and the plot
(``tools/analysis_tools/dense_study.py`` runs it; docs/results.md, "Dense
transfer", reports it)."""
import glob
import json
import os.path as osp
import statistics
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from .seed_stats import difference_text, mean_and_range
from .study import ARMS

#: task -> its config (configs/study/)
TASKS = {
    'seg': 'configs/study/upernet_vit-study-p4_fmnist-scenes-64.py',
    'det': 'configs/study/'
    'mask-rcnn_vit-study-p4_simplefpn_fmnist-scenes-64.py',
}
#: the order of the (arm, seed) encoders: the protocol check (scratch, MAE)
#: and MixedAE first, then the seeds that give intervals, then the rest
RUN_ORDER = [('scratch', 0), ('mae', 0), ('mixedae', 0), ('scratch', 1),
             ('mae', 1), ('mixedae', 1), ('mae', 2), ('mixedae', 2),
             ('naive_mixing', 0), ('homo_attn_only', 0),
             ('mae_mmpretrain', 0)]
#: (metric key in result.json, column title), per task
METRICS = {
    'seg': (('mIoU', 'mIoU'), ('mAcc', 'mAcc')),
    'det': (('bbox_mAP', 'box AP'), ('bbox_mAP_50', 'box AP50'),
            ('segm_mAP', 'mask AP')),
}
#: the metrics the interval and the protocol check are read on
MAIN_METRICS = ('mIoU', 'bbox_mAP', 'segm_mAP')


def planned_runs(tasks: Sequence[str], arms: Optional[Sequence[str]] = None,
                 seeds: Optional[Sequence[int]] = None
                 ) -> List[Tuple[str, int, str]]:
    """``[(arm, seed, task), ...]`` in the order they are made: each
    encoder's tasks together (a missing pretraining is made once, just
    before), encoders in ``RUN_ORDER`` or every given arm x seed."""
    unknown = [arm for arm in arms or () if arm not in ARMS]
    if unknown:
        raise ValueError(f'unknown arm {unknown[0]!r}: choose from '
                         f'{", ".join(ARMS)}')
    if seeds is None:
        encoders = [(arm, seed) for arm, seed in RUN_ORDER
                    if arms is None or arm in arms]
    else:
        encoders = [(arm, seed) for seed in seeds for arm in arms or ARMS]
    return [(arm, seed, task) for arm, seed in encoders for task in tasks]


def run_name(task: str, arm: str, seed: int) -> str:
    return f'{task}_{arm}_seed{seed}'


def data_root_options(task: str, scenes: str) -> List[str]:
    """``--cfg-options`` pointing a task config's loaders (and the COCO
    metric) at the scene folder ``scenes``."""
    options = [f'{loader}.dataset.data_root={scenes}'
               for loader in ('train_dataloader', 'val_dataloader',
                              'test_dataloader')]
    if task == 'det':
        annotations = osp.join(scenes, 'annotations/instances_test.json')
        options += [f'val_evaluator.ann_file={annotations}',
                    f'test_evaluator.ann_file={annotations}']
    return options


#: the training does not validate: the study tests the final checkpoint
#: once, in a run of its own (so a run stopped during its last iterations
#: and resumed is tested too)
NO_VALIDATION = ['train_cfg.val_begin=1000000000']


def encoder_options(checkpoint: Optional[str]) -> List[str]:
    """``--cfg-options`` loading the encoder from a pretraining checkpoint
    (strictly: the backbone's ``init_cfg``), or a random encoder for
    ``None`` (scratch)."""
    if checkpoint is None:
        return ['model.backbone.init_cfg=None']
    return [f'model.backbone.init_cfg.checkpoint={checkpoint}']


def read_test_metrics(test_work_dir: str, task: str
                      ) -> Optional[Dict[str, Optional[float]]]:
    """The metrics mmengine wrote for the newest test run in
    ``test_work_dir`` (``<timestamp>/<timestamp>.json``), in percent:
    mIoU, mAcc, aAcc, IoU.<class> for ``seg`` (background included, as
    mmseg counts it); bbox_mAP, bbox_mAP_50, bbox_mAP_75, segm_mAP, ... for
    ``det`` (``None`` for a size range with no object, which COCO scores
    -1). ``None`` when no test run wrote metrics."""
    paths = sorted(glob.glob(osp.join(test_work_dir, '*', '*.json')))
    paths = [p for p in paths if osp.basename(osp.dirname(p)) ==
             osp.splitext(osp.basename(p))[0]]
    if not paths:
        return None
    with open(paths[-1]) as f:
        raw = json.load(f)
    if task == 'seg':
        return {key: round(value, 2) for key, value in raw.items()
                if key in ('mIoU', 'mAcc', 'aAcc') or key.startswith('IoU.')}
    return {key.split('/', 1)[1]: (round(100 * value, 2) if value >= 0
                                   else None)
            for key, value in raw.items()
            if key.startswith('coco/') and not key.endswith('_copypaste')}


# ------------------------------------------------------------------- runs
def ensure_scenes(scenes: str, data_root: str,
                  log: Callable[[str], None]) -> None:
    """Compose the scene set in ``scenes`` with the converter's defaults
    unless it holds one (``scenes.json``)."""
    if osp.isfile(osp.join(scenes, 'scenes.json')):
        return
    log(f'composing the scenes in {scenes} (once, a few minutes)')
    from ..datasets.fmnist_scenes import build_scene_set
    instances = build_scene_set(data_root, scenes)
    log(f'scenes: {instances["train"]} training and {instances["test"]} '
        'test instances')


def encoder_checkpoint(arm: str, seed: int, pretrain_dir: str,
                       data_root: str, pretrain_cfg_options: Sequence[str],
                       log: Callable[[str], None]) -> Optional[str]:
    """The pretraining checkpoint of ``arm`` seed ``seed`` in
    ``pretrain_dir/<arm>_seed<seed>/pretrain/`` (pretrained now with
    ``pretrain_cfg_options`` if missing), or ``None`` for scratch."""
    from .pretraining import run_pretraining
    if ARMS[arm] is None:
        return None
    work_dir = osp.join(pretrain_dir, f'{arm}_seed{seed}', 'pretrain')
    checkpoint, _, _ = run_pretraining(
        ARMS[arm], work_dir, seed, data_root, pretrain_cfg_options, log)
    return osp.abspath(checkpoint)


def run_transfer(arm: str, seed: int, task: str, checkpoint: Optional[str],
                 *, out: str, scenes: str, cfg_options: Sequence[str],
                 commit: str, log: Callable[[str], None]) -> None:
    """One run of the dense study in ``OUT/runs/<task>_<arm>_seed<seed>/``:
    train ``task``'s config from the encoder ``checkpoint`` (``None``: a
    random one) on the scenes with ``seed``, test the final checkpoint and
    write ``result.json`` (the metrics, wall times, peak memory, the
    commit). A run whose ``result.json`` exists is skipped; a stopped
    training or test continues. Paths absolute (the children run from the
    clone's root); ``cfg_options`` go to the training and the test. Raises
    :class:`~.pretraining.RunFolderMismatchError` for a run folder started
    with other options (:func:`same_run_options`)."""
    import os
    import sys

    import torch

    from .pretraining import ROOT, run_training
    name = run_name(task, arm, seed)
    run_dir = osp.join(out, 'runs', name)
    result_path = osp.join(run_dir, 'result.json')
    if osp.isfile(result_path):
        _check_finished_options(result_path, cfg_options)
        log(f'{task} {arm} seed {seed}: done already ({result_path})')
        return
    config = osp.join(ROOT, TASKS[task])
    work_dir = osp.join(run_dir, 'work')
    options = [*data_root_options(task, scenes),
               *encoder_options(checkpoint), *cfg_options]
    started = same_run_options(work_dir, dict(
        config=TASKS[task], seed=seed, options=options, commit=commit))
    train = run_training(
        work_dir, lambda resume: [
            sys.executable, osp.join(ROOT, 'tools/train.py'), config,
            '--work-dir', work_dir, *(['--resume'] if resume else []),
            '--cfg-options', f'randomness.seed={seed}', *NO_VALIDATION,
            *options],
        log, what='transfer training', detail=name)
    with open(osp.join(work_dir, 'last_checkpoint')) as f:
        trained = f.read().strip()
    test_dir = osp.join(work_dir, 'test')
    if read_test_metrics(test_dir, task) is None and osp.isfile(
            osp.join(test_dir, 'timing.json')):
        os.remove(osp.join(test_dir, 'timing.json'))  # ended unrecorded
    test = run_training(
        test_dir, lambda resume: [
            sys.executable, osp.join(ROOT, 'tools/test.py'), config, trained,
            '--work-dir', test_dir, '--cfg-options', *options],
        log, what='test', detail=name, log_name='test_stdout.log')
    metrics = read_test_metrics(test_dir, task)
    result = dict(
        task=task, arm=arm, seed=seed, pretrain_seed=seed,
        transfer_seed=seed, config=TASKS[task],
        encoder=(osp.relpath(checkpoint, ROOT) if checkpoint else None),
        cfg_options=cfg_options, commit=started['commit'],
        metrics=metrics, train_seconds=round(train['seconds'], 1),
        train_attempts=train['attempts'],
        test_seconds=round(test['seconds'], 1),
        peak_rss_mib=round(max(train['peak_rss_mib'],
                               test['peak_rss_mib']), 1),
        torch_threads=torch.get_num_threads())
    with open(result_path + '.tmp', 'w') as f:
        json.dump(result, f, indent=1)
    os.replace(result_path + '.tmp', result_path)
    headline = ', '.join(f'{k} {v:.2f}' for k, v in metrics.items()
                         if k in ('mIoU', 'mAcc', 'bbox_mAP', 'segm_mAP'))
    log(f'{task} {arm} seed {seed}: {headline} '
        f'({result["train_seconds"] / 60:.1f} min training)')


def _check_finished_options(result_path: str, cfg_options: Sequence[str]):
    """A finished run made with other ``--cfg-options`` is not skipped as
    if it were this study's run: one table holds one protocol."""
    from .pretraining import RunFolderMismatchError
    with open(result_path) as f:
        finished = json.load(f).get('cfg_options', [])
    if list(finished) != list(cfg_options):
        raise RunFolderMismatchError(
            f'{result_path} was made with --cfg-options {finished or "(none)"}'
            f', not {list(cfg_options) or "(none)"}: give runs with other '
            'options their own --out folder')


def same_run_options(work_dir: str, options: dict) -> dict:
    """The options a run folder was started with (``run_options.json``,
    written at its first attempt); a later call with others (another
    ``--cfg-options``, encoder or scene folder) raises
    :class:`~.pretraining.RunFolderMismatchError`, so that a shrunk trial
    run is never reported as a full one. The commit is the first
    attempt's."""
    import os

    from .pretraining import RunFolderMismatchError
    path = osp.join(work_dir, 'run_options.json')
    if not osp.isfile(path):
        os.makedirs(work_dir, exist_ok=True)
        with open(path, 'w') as f:
            json.dump(options, f, indent=1)
        return options
    with open(path) as f:
        started = json.load(f)
    if {k: v for k, v in started.items() if k != 'commit'} != {
            k: v for k, v in options.items() if k != 'commit'}:
        raise RunFolderMismatchError(
            f'{work_dir} was started with other options ({path}): pass the '
            'same --cfg-options / --scenes / --pretrain-dir, or delete '
            f'{osp.dirname(work_dir)} to run it again with these')
    return started


# ----------------------------------------------------------------- report
def read_results(out_dir: str) -> List[dict]:
    results = []
    for path in sorted(glob.glob(osp.join(out_dir, 'runs', '*',
                                          'result.json'))):
        with open(path) as f:
            results.append(json.load(f))
    return results


def _by_arm(results: List[dict], task: str) -> Dict[str, List[dict]]:
    grouped = {}
    for arm in ARMS:
        runs = sorted((r for r in results
                       if r['task'] == task and r['arm'] == arm),
                      key=lambda r: r['seed'])
        if runs:
            grouped[arm] = runs
    return grouped


def markdown_table(results: List[dict]) -> str:
    """Per task, one row per arm: seeds, each metric's mean (min–max over
    seeds), training minutes and peak memory; then MixedAE minus MAE with
    its 95% interval, and the protocol check (MAE against scratch)."""
    lines = []
    for task in TASKS:
        grouped = _by_arm(results, task)
        if not grouped:
            continue
        titles = [title for _, title in METRICS[task]]
        lines += [f'### {"Segmentation (UperNet)" if task == "seg" else "Detection (Mask R-CNN)"}',
                  '', *_options_line(grouped),
                  '| arm | seeds | ' + ' | '.join(titles) +
                  ' | train min | peak RSS GiB |',
                  '|---' * (len(titles) + 4) + '|']
        for arm, runs in grouped.items():
            cells = [mean_and_range([r['metrics'][key] for r in runs])
                     for key, _ in METRICS[task]]
            cells.append(mean_and_range([r['train_seconds'] / 60
                                         for r in runs]))
            cells.append(mean_and_range([r['peak_rss_mib'] / 1024
                                         for r in runs]))
            seeds = ', '.join(str(r['seed']) for r in runs)
            lines.append(f'| {arm} | {seeds} | ' + ' | '.join(cells) + ' |')
        lines.append('')
        for key, title in METRICS[task]:
            if key not in MAIN_METRICS:
                continue
            lines.append(_protocol_line(grouped, key, title))
            for first, second in (('mae', 'scratch'), ('mixedae', 'mae')):
                lines.append(_difference_line(grouped, key, title, first,
                                              second))
        lines.append('')
    return '\n'.join(lines)


def _options_line(grouped: Dict[str, List[dict]]) -> List[str]:
    """The ``--cfg-options`` the task's runs were made with, as a line (none
    when there were none); runs made with different ones are refused, as
    one table holds one protocol."""
    made_with = {tuple(r.get('cfg_options', [])) for runs in grouped.values()
                 for r in runs}
    if len(made_with) > 1:
        raise ValueError(
            f'the runs of one task were made with different --cfg-options '
            f'{sorted(made_with)}: keep each protocol in its own --out folder')
    options = made_with.pop()
    return [f'Runs made with `--cfg-options {" ".join(options)}`.',
            ''] if options else []


def protocol_check(mae: Sequence[float], scratch: Sequence[float]
                   ) -> Optional[bool]:
    """Whether MAE beats scratch by more than the seed spread: its mean
    above scratch's by more than either arm's range (max - min) over
    seeds; ``None`` with fewer than 2 seeds on a side (no spread yet)."""
    if len(mae) < 2 or len(scratch) < 2:
        return None
    spread = max(max(mae) - min(mae), max(scratch) - min(scratch))
    return statistics.fmean(mae) - statistics.fmean(scratch) > spread


def _protocol_line(grouped, key, title) -> str:
    if 'mae' not in grouped or 'scratch' not in grouped:
        return f'- Protocol check, {title}: not measured yet'
    mae = [r['metrics'][key] for r in grouped['mae']]
    scratch = [r['metrics'][key] for r in grouped['scratch']]
    verdict = protocol_check(mae, scratch)
    if verdict is None:
        return (f'- Protocol check, {title}: waits for 2 seeds a side '
                f'({len(mae)} MAE, {len(scratch)} scratch)')
    spread = max(max(v) - min(v) for v in (mae, scratch))
    return (f'- Protocol check, {title}: MAE − scratch '
            f'{statistics.fmean(mae) - statistics.fmean(scratch):+.2f} '
            f'against a seed spread of {spread:.2f}: '
            + ('passes' if verdict else 'does not pass'))


def _difference_line(grouped, key, title, first, second) -> str:
    if first not in grouped or second not in grouped:
        return f'- {title}, {first} − {second}: not measured yet'
    return f'- {title}, {first} − {second}: ' + difference_text(
        [r['metrics'][key] for r in grouped[first]],
        [r['metrics'][key] for r in grouped[second]])


def plot(results: List[dict], path: str) -> None:
    """One panel per main metric: each arm's seeds as points, the mean as a
    bar."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    panels = [(task, key, title) for task in TASKS
              for key, title in METRICS[task] if key in MAIN_METRICS]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.6))
    for ax, (task, key, title) in zip(axes, panels):
        grouped = _by_arm(results, task)
        for x, (arm, runs) in enumerate(grouped.items()):
            values = [r['metrics'][key] for r in runs]
            ax.bar(x, statistics.fmean(values), color='#9ecae1', width=0.6)
            ax.plot([x] * len(values), values, 'o', color='#08519c',
                    markersize=4)
        ax.set_xticks(range(len(grouped)))
        ax.set_xticklabels(list(grouped), rotation=35, ha='right',
                           fontsize=8)
        ax.set_title(title)
        ax.grid(axis='y', alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
