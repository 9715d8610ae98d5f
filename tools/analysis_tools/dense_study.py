"""The dense study: every study encoder transferred to segmentation (mmseg
UperNet) and to detection / instance segmentation (mmdet Mask R-CNN) on
scenes of Fashion-MNIST items; the table, the interval for MixedAE minus
MAE and the plot.

    python tools/analysis_tools/dense_study.py --out docs/results/dense
    python tools/analysis_tools/dense_study.py --out docs/results/dense \\
        --arms mae mixedae --seeds 0 1 2 --tasks seg

Encoders: the classification study's pretrainings
(``--pretrain-dir``, default ``docs/results/runs``,
``<arm>_seed<s>/pretrain/``); a missing one is pretrained there first with
its study config (resumable), so a fresh clone reproduces the whole table.
The scenes (``--scenes``) are composed first if missing
(``tools/dataset_converters/fmnist_scenes.py`` with its defaults).

Resumable: a run whose ``result.json`` exists is skipped; a stopped
transfer run continues from its last checkpoint. Each run writes
``OUT/runs/<task>_<arm>_seed<s>/result.json`` (every metric, wall times,
peak memory, the commit); the study writes ``OUT/results.md`` and
``OUT/results.png``; ``--report-only`` rebuilds them. See
docs/results.md, "Dense transfer".
"""
import argparse
import json
import os
import os.path as osp
import sys
import time

if __name__ == '__main__':  # Ctrl-C during the imports below: one line
    sys.excepthook = lambda kind, *rest, hook=sys.excepthook: print(
        'dense_study.py: interrupted (Ctrl-C)', file=sys.stderr
    ) if issubclass(kind, KeyboardInterrupt) else hook(kind, *rest)

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


def parse_args(argv=None):
    from mixedae_mm.cli_args import non_negative_int
    from mixedae_mm.datasets import DEBIAN_FASHION_MNIST
    from mixedae_mm.evaluation.dense_study import TASKS
    from mixedae_mm.evaluation.study import ARMS
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--out', required=True, help='study folder')
    parser.add_argument('--data-root', default=DEBIAN_FASHION_MNIST,
                        help='folder with the four Fashion-MNIST IDX files')
    parser.add_argument('--scenes', default='data/fmnist_scenes',
                        help='scene folder (composed with the converter\'s '
                        'defaults if it holds no scenes.json)')
    parser.add_argument('--pretrain-dir', default='docs/results/runs',
                        help='the classification study\'s run folders: '
                        'encoders are read from (or pretrained into) '
                        '<arm>_seed<s>/pretrain/')
    parser.add_argument('--tasks', nargs='+', choices=list(TASKS),
                        default=list(TASKS))
    parser.add_argument('--arms', nargs='+', choices=list(ARMS),
                        help='default: all, each with its planned seeds')
    parser.add_argument('--seeds', nargs='+', type=non_negative_int,
                        help='the same seeds for every arm (a pretraining '
                        'seed; the transfer run is seeded with it too)')
    parser.add_argument('--cfg-options', nargs='+', default=[],
                        metavar='KEY=VALUE',
                        help='passed to every transfer run (train and '
                        'test), e.g. train_cfg.max_iters=20')
    parser.add_argument('--pretrain-cfg-options', nargs='+', default=[],
                        metavar='KEY=VALUE',
                        help='passed to a pretraining the study has to make')
    parser.add_argument('--report-only', action='store_true',
                        help='only rewrite results.md / results.png')
    return parser.parse_args(argv)


def ensure_scenes(args, log):
    if osp.isfile(osp.join(args.scenes, 'scenes.json')):
        return
    log(f'composing the scenes in {args.scenes} (once, a few minutes)')
    from mixedae_mm.datasets.fmnist_scenes import build_scene_set
    instances = build_scene_set(args.data_root, args.scenes)
    log(f'scenes: {instances["train"]} training and {instances["test"]} '
        'test instances')


def encoder_checkpoint(arm, seed, args, log):
    """The pretraining checkpoint of ``arm`` seed ``seed`` (pretrained now
    if missing), or ``None`` for scratch."""
    from mixedae_mm.evaluation.pretraining import run_pretraining
    from mixedae_mm.evaluation.study import ARMS
    if ARMS[arm] is None:
        return None
    work_dir = osp.join(args.pretrain_dir, f'{arm}_seed{seed}', 'pretrain')
    checkpoint, _, _ = run_pretraining(
        ARMS[arm], work_dir, seed, args.data_root, args.pretrain_cfg_options,
        log)
    return osp.abspath(checkpoint)


def run_one(arm, seed, task, checkpoint, args, log):
    from mixedae_mm.evaluation.dense_study import (NO_VALIDATION, TASKS,
                                                   data_root_options,
                                                   encoder_options,
                                                   read_test_metrics,
                                                   run_name)
    from mixedae_mm.evaluation.pretraining import run_training
    name = run_name(task, arm, seed)
    run_dir = osp.join(args.out, 'runs', name)
    result_path = osp.join(run_dir, 'result.json')
    if osp.isfile(result_path):
        log(f'{task} {arm} seed {seed}: done already ({result_path})')
        return
    config = osp.join(ROOT, TASKS[task])
    work_dir = osp.join(run_dir, 'work')
    options = [*data_root_options(task, args.scenes),
               *encoder_options(checkpoint), *args.cfg_options]
    started = same_run_options(work_dir, dict(
        config=TASKS[task], seed=seed, options=options, commit=args.commit))
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
    import torch
    result = dict(
        task=task, arm=arm, seed=seed, pretrain_seed=seed,
        transfer_seed=seed, config=TASKS[task],
        encoder=(osp.relpath(checkpoint, ROOT) if checkpoint else None),
        cfg_options=args.cfg_options, commit=started['commit'],
        metrics=metrics, train_seconds=round(train['seconds'], 1),
        train_attempts=train['attempts'],
        test_seconds=round(test['seconds'], 1),
        peak_rss_mib=round(max(train['peak_rss_mib'],
                               test['peak_rss_mib']), 1),
        torch_threads=torch.get_num_threads())
    with open(result_path + '.tmp', 'w') as f:
        json.dump(result, f, indent=1)
    os.replace(result_path + '.tmp', result_path)
    main = ', '.join(f'{k} {v:.2f}' for k, v in metrics.items()
                     if k in ('mIoU', 'mAcc', 'bbox_mAP', 'segm_mAP'))
    log(f'{task} {arm} seed {seed}: {main} '
        f'({result["train_seconds"] / 60:.1f} min training)')


def same_run_options(work_dir, options):
    """The options a run folder was started with (``run_options.json``,
    written at its first attempt); a later call with others (another
    ``--cfg-options``, encoder or scene folder) is refused, so that a
    shrunk trial run is never reported as a full one. The commit is the
    first attempt's."""
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
        sys.exit(
            f'dense_study.py: error: {work_dir} was started with other '
            f'options ({path}): pass the same --cfg-options / --scenes / '
            f'--pretrain-dir, or delete {osp.dirname(work_dir)} to run it '
            'again with these')
    return started


def write_report(out_dir, log):
    from mixedae_mm.evaluation.dense_study import (markdown_table, plot,
                                                   read_results)
    results = read_results(out_dir)
    if not results:
        log('no finished runs yet')
        return
    with open(osp.join(out_dir, 'results.md'), 'w') as f:
        f.write(markdown_table(results))
    plot(results, osp.join(out_dir, 'results.png'))
    log(f'{len(results)} runs -> {out_dir}/results.md, results.png')


def main(argv=None):
    from mixedae_mm.evaluation.pretraining import run_study
    run_study(lambda: _main(parse_args(argv)), 'dense')


def _main(args):
    from mixedae_mm.datasets import (FashionMNISTMissingError,
                                     fashion_mnist_files)
    from mixedae_mm.evaluation.dense_study import planned_runs

    def log(message):
        print(f'[dense {time.strftime("%H:%M:%S")}] {message}', flush=True)

    os.makedirs(args.out, exist_ok=True)
    if args.report_only:
        write_report(args.out, log)
        return
    try:
        fashion_mnist_files(args.data_root)
    except FashionMNISTMissingError as err:
        sys.exit(f'dense_study.py: error: {err}')
    # children run from the clone's root: every path absolute
    for name in ('data_root', 'scenes', 'pretrain_dir', 'out'):
        setattr(args, name, osp.abspath(getattr(args, name)))
    from mixedae_mm.utils import code_commit
    args.commit = code_commit()
    ensure_scenes(args, log)
    runs = planned_runs(args.tasks, args.arms, args.seeds)
    checkpoints = {}
    for number, (arm, seed, task) in enumerate(runs, 1):
        log(f'run {number}/{len(runs)}: {task} {arm} seed {seed}')
        if (arm, seed) not in checkpoints:
            checkpoints[arm, seed] = encoder_checkpoint(arm, seed, args, log)
        run_one(arm, seed, task, checkpoints[arm, seed], args, log)
        write_report(args.out, log)


if __name__ == '__main__':
    main()
