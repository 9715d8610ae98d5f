"""Fine-tune the study's MAE and MixedAE encoders with 200, 1,000 and all
6,000 labelled images per class: does the fine-tune gain hold with more
labels?

    python tools/analysis_tools/ablation_study.py --out work_dirs/study
    python tools/analysis_tools/label_budget_study.py \\
        --pretrain-dir work_dirs/study/runs --out work_dirs/label_budget
    python tools/analysis_tools/label_budget_study.py --budgets 1000 \\
        --seeds 0 1 --pretrain-dir work_dirs/study/runs --out DIR

The encoders are the ones an ablation study pretrained: ``--pretrain-dir``
is that study's ``runs/`` folder (``<arm>_seed<s>/pretrain/``); a missing
encoder is pretrained there first. Each budget is evaluated as the study
evaluates (kNN, linear probe, fine-tune; ``evaluation.label_budget`` has
the schedule per budget) in ``OUT/per_class_<n>/runs/<arm>_seed<s>/``.
Resumable as the study is; ``OUT/results.md`` and ``OUT/results.png`` hold
the table (mean, min–max, MixedAE minus MAE with Welch's 95% interval) and
the curve. See docs/results.md.
"""
import argparse
import os.path as osp
import sys

if __name__ == '__main__':  # Ctrl-C during the imports below: one line
    sys.excepthook = lambda kind, *rest, hook=sys.excepthook: print(
        'label_budget_study.py: interrupted (Ctrl-C)', file=sys.stderr
    ) if issubclass(kind, KeyboardInterrupt) else hook(kind, *rest)

from mixedae_mm.evaluation import label_budget, study
from mixedae_mm.evaluation.pretraining import RunFolderMismatchError
from mixedae_mm.evaluation.study_cli import (add_study_arguments, exit_on,
                                             study_main, write_report)

TOOL = 'label_budget_study.py'


def parse_args(argv=None):
    from mixedae_mm.cli_args import non_negative_int, positive_int
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--out', required=True, help='study folder')
    parser.add_argument('--pretrain-dir',
                        help="an ablation study's runs/ folder: the encoders "
                        'are read from (or pretrained into) '
                        '<arm>_seed<s>/pretrain/ there (needed unless '
                        '--report-only)')
    parser.add_argument('--budgets', nargs='+', type=positive_int,
                        help='labelled images per class (default: '
                        f'{" ".join(map(str, label_budget.BUDGETS))})')
    parser.add_argument('--finetune-epochs', nargs='+', type=positive_int,
                        help='fine-tune epochs, one per budget (default: '
                        'the schedule of evaluation.label_budget.BUDGETS)')
    parser.add_argument('--frozen-per-class', type=positive_int,
                        default=label_budget.FROZEN_PER_CLASS,
                        help='training images per class for the frozen '
                        'probes, or the budget where that is larger')
    parser.add_argument('--arms', nargs='+', choices=list(study.ARMS),
                        help='default: ' + ' '.join(label_budget.ARMS))
    parser.add_argument('--seeds', nargs='+', type=non_negative_int,
                        help='the same seeds at every budget (default: 3 '
                        'at the smaller budgets, 2 at the largest)')
    add_study_arguments(parser, cfg_options_help=(
        'passed to a pretraining that is missing and to the model built '
        'for evaluation'))
    args = parser.parse_args(argv)
    if args.pretrain_dir is None and not args.report_only:
        parser.error('--pretrain-dir is required: the runs/ folder of the '
                     'ablation study whose encoders are fine-tuned')
    try:
        args.schedule = label_budget.schedule(args.budgets,
                                              args.finetune_epochs)
    except ValueError as err:
        parser.error(str(err))
    args.plan = label_budget.planned_runs(list(args.schedule), args.arms,
                                          args.seeds)
    return args


def run_plan(args, log):
    args.data_root = osp.abspath(args.data_root)
    args.pretrain_dir = osp.abspath(args.pretrain_dir)
    data, loaded = None, None  # the plan runs budget by budget
    for number, (per_class, arm, seed) in enumerate(args.plan, 1):
        if per_class != loaded:
            # FashionMNISTDamagedError, balanced_subset's ValueError
            with exit_on(TOOL, ValueError):
                data = study.load_study_data(
                    args.data_root, max(args.frozen_per_class, per_class),
                    per_class, args.limit_train, args.limit_test, log)
            loaded = per_class
        log(f'run {number}/{len(args.plan)}: {per_class} labels a class, '
            f'{arm} seed {seed}')
        with exit_on(TOOL, RunFolderMismatchError):
            study.run_arm(
                arm, seed, label_budget.budget_dir(args.out, per_class),
                data, data_root=args.data_root,
                cfg_options=args.cfg_options,
                finetune_epochs=args.schedule[per_class],
                pretrain_dir=args.pretrain_dir, log=log)
        write_report(args.out, label_budget, log)


def main(argv=None):
    study_main(argv, parse_args, run_plan, prog='label budget', tool=TOOL,
               tables=label_budget)


if __name__ == '__main__':
    main()
