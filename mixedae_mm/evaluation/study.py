"""The small-scale study: every arm's encoder pretrained and evaluated the
same way (:func:`run_arm`), and the table and plot of the results
(``tools/analysis_tools/ablation_study.py`` runs it; ``docs/results.md``
reports it)."""
import json
import math
import os.path as osp
import statistics
from typing import Callable, Dict, List, Optional, Sequence

import torch
from torch import Tensor

from ..utils import eval_mode
from .knn import knn_accuracy, weighted_knn_scores
from .probes import encode, fine_tune, linear_probe
from .seed_stats import difference_text, mean_and_range

#: arm -> its pretraining config (``None``: no pretraining, the encoder of
#: the MixedAE config at its random initialisation)
ARMS = {
    'scratch': None,
    'mae_mmpretrain': 'configs/study/mmpretrain-mae_vit-study-p4_fmnist.py',
    'mae': 'configs/study/mae-ours_vit-study-p4_fmnist.py',
    'naive_mixing': 'configs/study/naive-mixing_vit-study-p4_fmnist.py',
    'homo_attn_only': 'configs/study/homo-attn-only_vit-study-p4_fmnist.py',
    'mixedae': 'configs/study/mixedae_vit-study-p4_fmnist.py',
}
#: the encoder ``scratch`` fine-tunes from its random initialisation
SCRATCH_CONFIG = ARMS['mixedae']
#: seeds per arm of the full table (issue budget: 3 for the two arms the
#: paper's claim compares, 2 for scratch, 1 for the others)
DEFAULT_SEEDS = dict(scratch=2, mae_mmpretrain=1, mae=3, naive_mixing=1,
                     homo_attn_only=1, mixedae=3)
#: the order the runs are made in: the protocol check (scratch, MAE,
#: MixedAE) first, so a partial table already answers it
RUN_ORDER = [('scratch', 0), ('mae', 0), ('mixedae', 0), ('mae', 1),
             ('mixedae', 1), ('scratch', 1), ('naive_mixing', 0),
             ('homo_attn_only', 0), ('mae_mmpretrain', 0), ('mae', 2),
             ('mixedae', 2)]
METRICS = ('finetune_top1', 'linear_top1', 'knn_top1', 'knn_mean_top1',
           'homo_acc_mean', 'homo_acc_last')
METRIC_TITLES = dict(
    finetune_top1='fine-tune top-1', linear_top1='linear top-1',
    knn_top1='kNN top-1 (cls)', knn_mean_top1='kNN top-1 (mean)',
    homo_acc_mean='homologous acc. (mean of layers)',
    homo_acc_last='homologous acc. (last layer)')


def planned_runs(arms: Optional[Sequence[str]] = None,
                 seeds: Optional[Sequence[int]] = None) -> List[tuple]:
    """``[(arm, seed), ...]`` in the order they are made: the default plan
    (``DEFAULT_SEEDS`` in ``RUN_ORDER``), or every given arm with every
    given seed."""
    if arms is None and seeds is None:
        return list(RUN_ORDER)
    arms = list(arms or ARMS)
    unknown = [arm for arm in arms if arm not in ARMS]
    if unknown:
        raise ValueError(f'unknown arm {unknown[0]!r}: choose from '
                         f'{", ".join(ARMS)}')
    if seeds is None:
        return [(arm, seed) for arm, seed in RUN_ORDER if arm in arms]
    return [(arm, seed) for seed in seeds for arm in arms]


# ------------------------------------------------------------------ models
def build_model(config_path: str, cfg_options: Optional[dict] = None):
    """The pretraining model of a study config, randomly initialised."""
    from mmengine.config import Config
    from mmengine.registry import DefaultScope
    from mmpretrain.registry import MODELS

    import mixedae_mm  # noqa: F401
    cfg = Config.fromfile(config_path)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        model = MODELS.build(cfg.model)
    model.init_weights()
    return model, cfg


def load_strictly(model, checkpoint: str) -> None:
    """Load a pretraining checkpoint into ``model``: every tensor must
    match by name and shape, or :class:`CheckpointMismatchError` says what
    differs (never evaluate a random encoder because a checkpoint belonged
    to another model)."""
    from ..checkpoints import load_checkpoint_strict
    load_checkpoint_strict(model, checkpoint)


# -------------------------------------------------------------------- data
def preprocess(images: Tensor, cfg, model, batch_size: int = 1000) -> Tensor:
    """``(n, 28, 28)`` uint8 Fashion-MNIST -> ``(n, 3, 32, 32)`` model
    inputs, through the config's ``test_pipeline`` and the model's data
    preprocessor (what the online kNN hook and the inferencers see)."""
    from mmengine.dataset import Compose, default_collate
    from mmpretrain.registry import TRANSFORMS
    transform = Compose([TRANSFORMS.build(t) for t in cfg.test_pipeline])
    chunks = []
    for start in range(0, len(images), batch_size):
        batch = default_collate([
            transform(dict(img=image)) for image in
            images[start:start + batch_size].numpy()])
        chunks.append(model.data_preprocessor(batch, False)['inputs'])
    return torch.cat(chunks)


# ------------------------------------------------------------ measurements
@torch.no_grad()
def homologous_accuracy(model, images: Tensor, seed: int = 0
                        ) -> Optional[List[float]]:
    """Per homologous-attention layer, the fraction of each patch query's
    top-K picks that come from its own image, over ``images`` mixed in
    groups with a fixed partition (eval mode); ``None`` for a model
    without homologous attention."""
    from ..visualization.reconstruction import seeded_rng
    backbone = model.backbone
    if not getattr(backbone, 'mixing', False) or not backbone.homo_attn_layers:
        return None
    usable = len(images) - len(images) % backbone.group_size
    chunks = images[:usable].split(512)
    with eval_mode(model), seeded_rng(seed, images.device):
        per_chunk = torch.stack([backbone(chunk, mask=True).homo_accuracy
                                 for chunk in chunks])
    sizes = torch.tensor([len(chunk) for chunk in chunks], dtype=torch.float)
    mean = (per_chunk * sizes[:, None]).sum(0) / sizes.sum()
    return [round(v, 4) for v in mean.tolist()]


def knn_top1(train: Tensor, train_labels: Tensor, test: Tensor,
             test_labels: Tensor) -> float:
    scores = weighted_knn_scores(train, train_labels, test,
                                 int(train_labels.max()) + 1, k=20,
                                 temperature=0.07)
    return knn_accuracy(scores, test_labels)['top1']


def evaluate_encoder(model, data: Dict[str, Tensor], *, finetune: dict,
                     seed: int, log=print) -> Dict[str, object]:
    """Every metric of the table for one pretrained (or random) model;
    fine-tuning changes the model's backbone in place, so it comes last."""
    import time
    backbone = model.backbone
    result = {}
    start = time.perf_counter()
    train = encode(backbone, data['train_images'])
    test = encode(backbone, data['test_images'])
    result['knn_top1'] = knn_top1(train['cls'], data['train_labels'],
                                  test['cls'], data['test_labels'])
    result['knn_mean_top1'] = knn_top1(train['mean'], data['train_labels'],
                                       test['mean'], data['test_labels'])
    result['linear_top1'] = linear_probe(
        train['mean'], data['train_labels'], test['mean'],
        data['test_labels'], seed=seed)
    result['frozen_eval_seconds'] = round(time.perf_counter() - start, 1)
    log(f'kNN (cls) {result["knn_top1"]:.2f}  kNN (mean) '
        f'{result["knn_mean_top1"]:.2f}  linear {result["linear_top1"]:.2f}')
    layers = homologous_accuracy(model, data['test_images'])
    result['homo_acc_layers'] = layers
    result['homo_acc_mean'] = (None if layers is None else
                               round(statistics.fmean(layers), 4))
    result['homo_acc_last'] = None if layers is None else layers[-1]

    labelled = data['finetune_index']
    start = time.perf_counter()
    last_report = [0.]

    def on_step(step, total):
        now = time.perf_counter()
        if now - last_report[0] > 60 or step == total:
            last_report[0] = now
            log(f'fine-tune step {step}/{total}')

    result['finetune_top1'] = fine_tune(
        backbone, data['train_images'][labelled],
        data['train_labels'][labelled], data['test_images'],
        data['test_labels'], seed=seed, on_step=on_step, **finetune)
    result['finetune_seconds'] = round(time.perf_counter() - start, 1)
    log(f'fine-tune {result["finetune_top1"]:.2f}')
    return result


def load_study_data(data_root: str, frozen_per_class: int = 1000,
                    finetune_per_class: int = 200,
                    limit_train: Optional[int] = None,
                    limit_test: Optional[int] = None,
                    log=print) -> Dict[str, Tensor]:
    """The images and labels every study encoder is evaluated on: a
    class-balanced subset of the training split for the frozen probes
    (``train_raw``, ``train_labels``), the labelled fine-tuning images
    drawn from it (``finetune_index``, ``finetune_per_class`` of each
    class) and the test split (``test_raw``, ``test_labels``); raw
    ``(n, 28, 28)`` uint8."""
    from ..datasets import load_fashion_mnist
    data = {}
    for split, limit in (('train', limit_train), ('test', limit_test)):
        images, labels = load_fashion_mnist(data_root, split)
        data[f'{split}_raw'] = images[:limit]
        data[f'{split}_labels'] = labels[:limit]
    # the fine-tuning images are drawn from the frozen-feature subset
    frozen = balanced_subset(data['train_labels'], frozen_per_class)
    data['train_raw'] = data['train_raw'][frozen]
    data['train_labels'] = data['train_labels'][frozen]
    data['finetune_index'] = balanced_subset(data['train_labels'],
                                             finetune_per_class)
    data['finetune_per_class'] = finetune_per_class
    log(f'Fashion-MNIST from {data_root}: {len(frozen)} training images '
        f'for the frozen probes, {len(data["finetune_index"])} of them '
        f'labelled for fine-tuning, {len(data["test_labels"])} test images')
    return data


def evaluate_on_study_data(model, cfg, data: Dict[str, Tensor], *,
                           finetune_epochs: int, seed: int,
                           log=print) -> Dict[str, object]:
    """:func:`evaluate_encoder` on :func:`load_study_data`'s raw images,
    turned into inputs through ``cfg``'s test pipeline."""
    inputs = {split: preprocess(data[f'{split}_raw'], cfg, model)
              for split in ('train', 'test')}
    return evaluate_encoder(
        model, dict(train_images=inputs['train'],
                    train_labels=data['train_labels'],
                    test_images=inputs['test'],
                    test_labels=data['test_labels'],
                    finetune_index=data['finetune_index']),
        finetune=dict(epochs=finetune_epochs, batch_size=64), seed=seed,
        log=log)


def balanced_subset(labels: Tensor, per_class: int, seed: int = 0) -> Tensor:
    """Indices of ``per_class`` images of every class, drawn with ``seed``
    (the same labelled subset for every arm)."""
    generator = torch.Generator().manual_seed(seed)
    picked = []
    for label in labels.unique().tolist():
        members = (labels == label).nonzero().flatten()
        if len(members) < per_class:
            raise ValueError(f'class {label} has {len(members)} images, '
                             f'fewer than the {per_class} per class asked '
                             'for: lower --frozen-per-class or '
                             '--finetune-per-class')
        picked.append(members[torch.randperm(
            len(members), generator=generator)[:per_class]])
    return torch.cat(picked).sort().values


# ------------------------------------------------------------------ a run
def options_dict(options: Sequence[str]) -> dict:
    """``KEY=VALUE`` strings (``--cfg-options``) as the dict
    ``Config.merge_from_dict`` takes, values parsed as mmengine's
    ``DictAction`` parses them."""
    from mmengine.config import DictAction
    parsed = {}
    for option in options:
        key, sep, value = option.partition('=')
        if not sep:
            raise SystemExit(f'error: --cfg-options {option!r}: expected '
                             'KEY=VALUE')
        parsed[key] = DictAction._parse_iterable(value)
    return parsed


def run_arm(arm: str, seed: int, out: str, data: Dict[str, Tensor], *,
            data_root: str, cfg_options: Sequence[str],
            finetune_epochs: int, log: Callable[[str], None],
            pretrain_dir: Optional[str] = None) -> dict:
    """One run of the study in ``OUT/runs/<arm>_seed<seed>/``: pretrain
    ``arm``'s config with ``seed`` (or continue its stopped pretraining;
    ``scratch`` has none), evaluate the encoder on ``data``
    (:func:`load_study_data`) and write ``result.json`` (every metric, wall
    times, peak memory, the commit of the code). A run whose
    ``result.json`` exists is read, not run again; the run folder is held
    while it runs.

    The pretraining lives in the run folder's ``pretrain/``, or with
    ``pretrain_dir`` in ``PRETRAIN_DIR/<arm>_seed<seed>/pretrain/``, so that
    another evaluation (a label budget) reuses an earlier study's encoders.
    ``cfg_options`` (``KEY=VALUE``) go to the pretraining and to the model
    built for evaluation. Raises :class:`~.pretraining.
    RunFolderMismatchError` when the folder's checkpoint does not fit the
    arm's model (another arm's, or of other ``cfg_options``), or when its
    finished run was evaluated with other settings.
    """
    from .pretraining import hold_run_folder
    run_dir = osp.join(out, 'runs', f'{arm}_seed{seed}')
    result_path = osp.join(run_dir, 'result.json')
    if osp.isfile(result_path):
        log(f'{arm} seed {seed}: done already ({result_path})')
        return _finished_run(
            result_path, run_settings(data, cfg_options, finetune_epochs))
    # another study on the same folder would train and evaluate it twice
    with hold_run_folder(run_dir):
        if osp.isfile(result_path):  # finished between check and lock
            return _finished_run(result_path, run_settings(
                data, cfg_options, finetune_epochs))
        pretrain_work_dir = (
            osp.join(run_dir, 'pretrain') if pretrain_dir is None else
            osp.join(pretrain_dir, f'{arm}_seed{seed}', 'pretrain'))
        return _run_arm(arm, seed, out, data, data_root, cfg_options,
                        finetune_epochs, log, run_dir, pretrain_work_dir)


def run_settings(data: Dict[str, Tensor], cfg_options: Sequence[str],
                 finetune_epochs: int) -> dict:
    """What a run's numbers depend on besides arm and seed, as its
    ``result.json`` records it."""
    return dict(cfg_options=list(cfg_options),
                finetune_epochs=finetune_epochs,
                finetune_images=len(data['finetune_index']),
                train_images=len(data['train_labels']),
                test_images=len(data['test_labels']))


def _finished_run(result_path: str, settings: dict) -> dict:
    """The finished run's result; a run made with other settings would
    silently stand in for the one asked for, so it is refused."""
    from .pretraining import RunFolderMismatchError
    result = json.load(open(result_path))
    other = {key: result.get(key) for key, value in settings.items()
             if result.get(key) != value}
    if other:
        asked = {key: settings[key] for key in other}
        raise RunFolderMismatchError(
            f'{result_path} was made with {other}, not {asked}: give runs '
            'with other settings their own --out folder')
    return result


def _run_arm(arm, seed, out, data, data_root, cfg_options, finetune_epochs,
             log, run_dir, work_dir) -> dict:
    import glob
    import os

    from ..checkpoints import CheckpointMismatchError
    from ..utils import code_commit
    from .pretraining import ROOT, RunFolderMismatchError, run_pretraining
    result_path = osp.join(run_dir, 'result.json')
    config = ARMS[arm]
    overrides = options_dict(cfg_options)
    result = dict(arm=arm, seed=seed, config=config or SCRATCH_CONFIG,
                  cfg_options=cfg_options, commit=code_commit())
    if config is None:
        torch.manual_seed(seed)
        model, cfg = build_model(osp.join(ROOT, SCRATCH_CONFIG), overrides)
        result.update(pretrain_seconds=0., pretrain_peak_rss_mib=None,
                      checkpoint=None, curves={})
    else:
        checkpoint, seconds, rss = run_pretraining(
            config, work_dir, seed, data_root, cfg_options, log)
        model, cfg = build_model(osp.join(ROOT, config), overrides)
        try:
            load_strictly(model, checkpoint)
        except CheckpointMismatchError as err:
            raise RunFolderMismatchError(
                f'{err}. The run folder holds the checkpoint of another arm '
                'or of other --cfg-options: delete '
                f'{run_dir} (or pass the same options) and run again'
            ) from None
        curves = read_curves(sorted(glob.glob(  # one per attempt, in order
            osp.join(work_dir, '*', 'vis_data', 'scalars.json'))))
        result.update(pretrain_seconds=round(seconds, 1),
                      pretrain_peak_rss_mib=round(rss, 1),
                      checkpoint=osp.relpath(checkpoint, out),
                      curves=curves)
    metrics = evaluate_on_study_data(
        model, cfg, data, finetune_epochs=finetune_epochs, seed=seed,
        log=lambda message: log(f'{arm} seed {seed}: {message}'))
    result.update(metrics)
    result.update(run_settings(data, cfg_options, finetune_epochs),
                  finetune_per_class=data['finetune_per_class'],
                  torch_threads=torch.get_num_threads())
    os.makedirs(run_dir, exist_ok=True)
    with open(result_path + '.tmp', 'w') as f:
        json.dump(result, f, indent=1)
    os.replace(result_path + '.tmp', result_path)
    return result


# ----------------------------------------------------------------- reports
def read_results(out_dir: str) -> List[dict]:
    import glob
    return [json.load(open(path)) for path in
            sorted(glob.glob(osp.join(out_dir, 'runs', '*', 'result.json')))]


def _cell(values: List[float], percent: bool) -> str:
    return mean_and_range(values, 1 if percent else 3) if values else '–'


def markdown_table(results: List[dict]) -> str:
    """Mean and (min–max) over seeds of every metric, per arm, with cost;
    then MixedAE minus MAE with Welch's 95% interval on the four top-1s."""
    header = ['arm', 'seeds'] + [METRIC_TITLES[m] for m in METRICS] + [
        'pretrain min', 'fine-tune min', 'peak RSS GiB']
    lines = ['| ' + ' | '.join(header) + ' |',
             '|' + '---|' * len(header)]
    for arm in ARMS:
        runs = [r for r in results if r['arm'] == arm]
        if not runs:
            continue
        row = [arm, ', '.join(str(r['seed']) for r in runs)]
        for metric in METRICS:
            values = [r[metric] for r in runs if r.get(metric) is not None]
            row.append(_cell(values, not metric.startswith('homo')))
        minutes = [r['pretrain_seconds'] / 60 for r in runs
                   if r.get('pretrain_seconds')]
        row.append(_cell(minutes, True) if minutes else '–')
        row.append(_cell([r['finetune_seconds'] / 60 for r in runs], True))
        memory = [r['pretrain_peak_rss_mib'] / 1024 for r in runs
                  if r.get('pretrain_peak_rss_mib')]
        row.append(_cell(memory, True) if memory else '–')
        lines.append('| ' + ' | '.join(row) + ' |')
    arms = {arm: [r for r in results if r['arm'] == arm]
            for arm in ('mixedae', 'mae')}
    if all(arms.values()):
        lines.append('')
        for metric in METRICS[:4]:
            lines.append(f'- {METRIC_TITLES[metric]}, mixedae − mae: ' +
                         difference_text(*([r[metric] for r in runs]
                                           for runs in arms.values())))
    return '\n'.join(lines) + '\n'


def read_curves(scalars_jsons: Sequence[str]) -> Dict[str, tuple]:
    """``{key: (steps, values)}`` of ``knn_top1`` and ``homo_acc`` in a
    run's ``scalars.json`` files (one per attempt of a resumed run, in time
    order), joined: each step once, in order.

    An attempt resumes from its predecessor's last checkpoint, which can
    be older than the predecessor's last logged step (one killed without
    saving); the steps it repeats are those of the run that went on, so
    its points replace the earlier attempt's from its first step on.
    """
    curves = {}
    for path in scalars_jsons:
        attempt = {}
        with open(path) as f:
            for line in f:
                record = json.loads(line) if line.strip() else {}
                for key in ('knn_top1', 'homo_acc'):
                    if key in record:
                        steps, values = attempt.setdefault(key, ([], []))
                        steps.append(record['step'])
                        values.append(record[key])
        for key, (steps, values) in attempt.items():
            kept = [(s, v) for s, v in zip(*curves.get(key, ([], [])))
                    if s < steps[0]]
            curves[key] = ([s for s, _ in kept] + steps,
                           [v for _, v in kept] + values)
    return curves


def plot(results: List[dict], out_path: str) -> None:
    """Top: every metric per arm (a dot per seed, a bar at the mean).
    Bottom: online kNN and homologous accuracy against iteration."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    arms = [arm for arm in ARMS if any(r['arm'] == arm for r in results)]
    colours = {arm: plt.cm.tab10(i) for i, arm in enumerate(ARMS)}
    figure, axes = plt.subplots(2, 4, figsize=(18, 8))
    for ax, metric in zip(axes[0], METRICS[:4]):
        for x, arm in enumerate(arms):
            values = [r[metric] for r in results
                      if r['arm'] == arm and r.get(metric) is not None]
            if not values:
                continue
            ax.bar(x, statistics.fmean(values), color=colours[arm],
                   alpha=0.35)
            ax.scatter([x] * len(values), values, color=colours[arm],
                       zorder=3)
        ax.set_xticks(range(len(arms)), arms, rotation=35, ha='right')
        ax.set_title(METRIC_TITLES[metric] + ' (%)')
        low = min((r[metric] for r in results if r.get(metric) is not None),
                  default=0)
        ax.set_ylim(max(0, math.floor(low) - 3), None)
    for ax, key, title in ((axes[1][0], 'knn_top1', 'online kNN top-1 (%)'),
                           (axes[1][1], 'homo_acc',
                            'homologous accuracy (train batches)')):
        for result in results:
            curve = result.get('curves', {}).get(key)
            if curve:
                ax.plot(*curve, color=colours[result['arm']], alpha=0.8,
                        label=f'{result["arm"]} s{result["seed"]}')
        ax.set_xlabel('iteration')
        ax.set_title(title)
        if key == 'homo_acc':
            ax.axhline(0.25, color='grey', linestyle='--', linewidth=1)
        if ax.lines:
            ax.legend(fontsize=7)
    ax = axes[1][2]
    for result in results:
        layers = result.get('homo_acc_layers')
        if layers:
            ax.plot(range(len(layers)), layers, marker='o',
                    color=colours[result['arm']],
                    label=f'{result["arm"]} s{result["seed"]}')
    ax.axhline(0.25, color='grey', linestyle='--', linewidth=1)
    ax.set_xlabel('encoder layer')
    ax.set_title('homologous accuracy per layer (end, test images)')
    if ax.lines:
        ax.legend(fontsize=7)
    axes[1][3].axis('off')
    figure.tight_layout()
    figure.savefig(out_path, dpi=90)
    plt.close(figure)
