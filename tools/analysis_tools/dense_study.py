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
import os.path as osp
import sys

if __name__ == '__main__':  # Ctrl-C during the imports below: one line
    sys.excepthook = lambda kind, *rest, hook=sys.excepthook: print(
        'dense_study.py: interrupted (Ctrl-C)', file=sys.stderr
    ) if issubclass(kind, KeyboardInterrupt) else hook(kind, *rest)

from mixedae_mm.evaluation import dense_study
from mixedae_mm.evaluation.pretraining import RunFolderMismatchError
from mixedae_mm.evaluation.study_cli import (add_study_arguments, exit_on,
                                             study_main, write_report)

TOOL = 'dense_study.py'


def parse_args(argv=None):
    from mixedae_mm.cli_args import non_negative_int
    from mixedae_mm.evaluation.dense_study import TASKS
    from mixedae_mm.evaluation.study import ARMS
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--out', required=True, help='study folder')
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
    parser.add_argument('--pretrain-cfg-options', nargs='+', default=[],
                        metavar='KEY=VALUE',
                        help='passed to a pretraining the study has to make')
    add_study_arguments(parser, limits=False, cfg_options_help=(
        'passed to every transfer run (train and test), e.g. '
        'train_cfg.max_iters=20'))
    return parser.parse_args(argv)


def run_one(arm, seed, task, checkpoint, args, log):
    """One transfer run (``evaluation.dense_study.run_transfer``); a run
    folder started with other options is one line."""
    with exit_on(TOOL, RunFolderMismatchError):
        dense_study.run_transfer(
            arm, seed, task, checkpoint, out=args.out, scenes=args.scenes,
            cfg_options=args.cfg_options, commit=args.commit, log=log)


def run_plan(args, log):
    # children run from the clone's root: every path absolute
    for name in ('data_root', 'scenes', 'pretrain_dir', 'out'):
        setattr(args, name, osp.abspath(getattr(args, name)))
    from mixedae_mm.utils import code_commit
    args.commit = code_commit()  # of the code that runs, read at its start
    dense_study.ensure_scenes(args.scenes, args.data_root, log)
    runs = dense_study.planned_runs(args.tasks, args.arms, args.seeds)
    checkpoints = {}
    for number, (arm, seed, task) in enumerate(runs, 1):
        log(f'run {number}/{len(runs)}: {task} {arm} seed {seed}')
        if (arm, seed) not in checkpoints:
            checkpoints[arm, seed] = dense_study.encoder_checkpoint(
                arm, seed, args.pretrain_dir, args.data_root,
                args.pretrain_cfg_options, log)
        run_one(arm, seed, task, checkpoints[arm, seed], args, log)
        write_report(args.out, dense_study, log)


def main(argv=None):
    study_main(argv, parse_args, run_plan, prog='dense', tool=TOOL,
               tables=dense_study)


if __name__ == '__main__':
    main()
