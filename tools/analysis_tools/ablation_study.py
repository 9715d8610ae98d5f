"""The small-scale study on Fashion-MNIST: pretrain every arm, evaluate
every encoder the same way, write the table and the plot.

    python tools/analysis_tools/ablation_study.py --out work_dirs/study
    python tools/analysis_tools/ablation_study.py --data-root DIR \\
        --arms mae mixedae --seeds 0 1 2 --out work_dirs/study

Arms (``configs/study/``): ``scratch`` (no pretraining), ``mae_mmpretrain``
(mmpretrain's own MAE), ``mae`` / ``naive_mixing`` / ``homo_attn_only``
(our ablations) and ``mixedae``. Without ``--arms``/``--seeds`` the default
plan runs (3 seeds of mae and mixedae, 2 of scratch, 1 of the others).

Resumable: a run whose ``result.json`` exists is skipped; a pretraining
that was stopped continues from its last checkpoint (``train.py
--resume``). Ctrl-C or SIGTERM stops a pretraining with a checkpoint
(the study passes the signal on and waits for it); one study at a time
per run folder. Each run writes ``OUT/runs/<arm>_seed<s>/result.json``
(every metric, wall times, peak memory); the study writes
``OUT/results.md`` (mean and min–max over seeds) and ``OUT/results.png``.
See docs/results.md.
"""
import argparse
import os.path as osp
import sys

if __name__ == '__main__':  # Ctrl-C during the imports below: one line
    sys.excepthook = lambda kind, *rest, hook=sys.excepthook: print(
        'ablation_study.py: interrupted (Ctrl-C)', file=sys.stderr
    ) if issubclass(kind, KeyboardInterrupt) else hook(kind, *rest)

from mixedae_mm.evaluation import study
from mixedae_mm.evaluation.pretraining import RunFolderMismatchError
from mixedae_mm.evaluation.study_cli import (add_study_arguments, exit_on,
                                             study_main, write_report)

TOOL = 'ablation_study.py'


def parse_args(argv=None):
    from mixedae_mm.cli_args import non_negative_int
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--out', required=True, help='study folder')
    parser.add_argument('--arms', nargs='+', choices=list(study.ARMS),
                        help='default: all, each with its planned seeds')
    parser.add_argument('--seeds', nargs='+', type=non_negative_int,
                        help='the same seeds for every arm')
    parser.add_argument('--frozen-per-class', type=int, default=1000,
                        help='training images per class whose frozen '
                        'features are the kNN bank and the linear probe\'s '
                        'training set (1000: a fixed sixth of the set)')
    parser.add_argument('--finetune-per-class', type=int, default=200,
                        help='labelled training images per class for '
                        'fine-tuning (200: a fixed 3.3%% of the set, drawn '
                        'inside the frozen subset)')
    parser.add_argument('--finetune-epochs', type=int, default=10)
    add_study_arguments(parser, cfg_options_help=(
        'passed to every pretraining (tools/train.py) and to the model '
        'built for evaluation, e.g. train_cfg.max_iters=20 to shrink a run'))
    args = parser.parse_args(argv)
    for flag in ('frozen_per_class', 'finetune_per_class', 'finetune_epochs'):
        if getattr(args, flag) < 1:
            parser.error(f'--{flag.replace("_", "-")} must be at least 1')
    return args


def load_data(args, log):
    """The images and labels the probes use; exits with one line for a
    damaged file or a class with fewer images than asked for."""
    # FashionMNISTDamagedError, balanced_subset's ValueError
    with exit_on(TOOL, ValueError):
        return study.load_study_data(args.data_root, args.frozen_per_class,
                               args.finetune_per_class, args.limit_train,
                               args.limit_test, log)


def run_one(arm, seed, args, data, cfg_options, log):
    """One run (``evaluation.study.run_arm``); a run folder holding
    another arm's checkpoint is one line."""
    with exit_on(TOOL, RunFolderMismatchError):
        return study.run_arm(
            arm, seed, args.out, data, data_root=args.data_root,
            cfg_options=cfg_options, finetune_epochs=args.finetune_epochs,
            log=log)


def run_plan(args, log):
    args.data_root = osp.abspath(args.data_root)
    runs = study.planned_runs(args.arms, args.seeds)
    data = load_data(args, log)
    for number, (arm, seed) in enumerate(runs, 1):
        log(f'run {number}/{len(runs)}: {arm} seed {seed}')
        run_one(arm, seed, args, data, args.cfg_options, log)
        write_report(args.out, study, log)


def main(argv=None):
    # a SIGTERM or Ctrl-C ends the study with one line; a pretraining
    # passes them on to its training
    study_main(argv, parse_args, run_plan, prog='study', tool=TOOL,
               tables=study)


if __name__ == '__main__':
    main()
