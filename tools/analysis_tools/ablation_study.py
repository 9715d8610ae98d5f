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
import json
import os
import os.path as osp
import sys
import time

if __name__ == '__main__':  # Ctrl-C during the imports below: one line
    sys.excepthook = lambda kind, *rest, hook=sys.excepthook: print(
        'ablation_study.py: interrupted (Ctrl-C)', file=sys.stderr
    ) if issubclass(kind, KeyboardInterrupt) else hook(kind, *rest)

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


def parse_args(argv=None):
    from mixedae_mm.cli_args import non_negative_int, positive_int
    from mixedae_mm.datasets import DEBIAN_FASHION_MNIST
    from mixedae_mm.evaluation.study import ARMS
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--data-root', default=DEBIAN_FASHION_MNIST,
                        help='folder with the four Fashion-MNIST IDX files '
                        '(.gz or not); default: where Debian\'s '
                        'dataset-fashion-mnist puts them')
    parser.add_argument('--out', required=True, help='study folder')
    parser.add_argument('--arms', nargs='+', choices=list(ARMS),
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
    parser.add_argument('--limit-train', type=positive_int, default=None,
                        help='evaluate on the first N training images only '
                        '(tests)')
    parser.add_argument('--limit-test', type=positive_int, default=None,
                        help='evaluate on the first N test images only '
                        '(tests)')
    parser.add_argument('--cfg-options', nargs='+', default=[],
                        metavar='KEY=VALUE',
                        help='passed to every pretraining (tools/train.py) '
                        'and to the model built for evaluation, e.g. '
                        'train_cfg.max_iters=20 to shrink a run')
    parser.add_argument('--report-only', action='store_true',
                        help='only rewrite results.md / results.png')
    args = parser.parse_args(argv)
    for flag in ('frozen_per_class', 'finetune_per_class', 'finetune_epochs'):
        if getattr(args, flag) < 1:
            parser.error(f'--{flag.replace("_", "-")} must be at least 1')
    return args


def options_dict(options):
    from mmengine.config import DictAction
    parsed = {}
    for option in options:
        key, sep, value = option.partition('=')
        if not sep:
            raise SystemExit(f'error: --cfg-options {option!r}: expected '
                             'KEY=VALUE')
        parsed[key] = DictAction._parse_iterable(value)
    return parsed


def load_data(args, log):
    """The images and labels the probes use; exits with one line for a
    damaged file or a class with fewer images than asked for."""
    from mixedae_mm.evaluation.study import load_study_data
    try:
        return load_study_data(args.data_root, args.frozen_per_class,
                               args.finetune_per_class, args.limit_train,
                               args.limit_test, log)
    except ValueError as err:  # FashionMNISTDamagedError, balanced_subset's
        raise SystemExit(f'ablation_study.py: error: {err}') from None


def run_one(arm, seed, args, data, cfg_options, log):
    from mixedae_mm.evaluation.pretraining import hold_run_folder
    run_dir = osp.join(args.out, 'runs', f'{arm}_seed{seed}')
    result_path = osp.join(run_dir, 'result.json')
    if osp.isfile(result_path):
        log(f'{arm} seed {seed}: done already ({result_path})')
        return json.load(open(result_path))
    # another study on the same folder would train and evaluate it twice
    with hold_run_folder(run_dir):
        if osp.isfile(result_path):  # finished between check and lock
            return json.load(open(result_path))
        return _run_one(arm, seed, args, data, cfg_options, log, run_dir)


def _run_one(arm, seed, args, data, cfg_options, log, run_dir):
    import torch

    from mixedae_mm.checkpoints import CheckpointMismatchError
    from mixedae_mm.evaluation.pretraining import run_pretraining
    from mixedae_mm.evaluation.study import (ARMS, SCRATCH_CONFIG,
                                             build_model,
                                             evaluate_on_study_data,
                                             load_strictly, read_curves)
    result_path = osp.join(run_dir, 'result.json')
    config = ARMS[arm]
    overrides = options_dict(cfg_options)
    result = dict(arm=arm, seed=seed, config=config or SCRATCH_CONFIG,
                  cfg_options=cfg_options)
    if config is None:
        torch.manual_seed(seed)
        model, cfg = build_model(osp.join(ROOT, SCRATCH_CONFIG), overrides)
        result.update(pretrain_seconds=0., pretrain_peak_rss_mib=None,
                      checkpoint=None, curves={})
    else:
        work_dir = osp.join(run_dir, 'pretrain')
        checkpoint, seconds, rss = run_pretraining(
            config, work_dir, seed, args.data_root, cfg_options, log)
        model, cfg = build_model(osp.join(ROOT, config), overrides)
        try:
            load_strictly(model, checkpoint)
        except CheckpointMismatchError as err:
            raise SystemExit(
                f'ablation_study.py: error: {err}. The run folder holds the '
                'checkpoint of another arm or of other --cfg-options: '
                f'delete {run_dir} (or pass the same options) and run '
                'again') from None
        import glob
        curves = read_curves(sorted(glob.glob(  # one per attempt, in order
            osp.join(work_dir, '*', 'vis_data', 'scalars.json'))))
        result.update(pretrain_seconds=round(seconds, 1),
                      pretrain_peak_rss_mib=round(rss, 1),
                      checkpoint=osp.relpath(checkpoint, args.out),
                      curves=curves)
    metrics = evaluate_on_study_data(
        model, cfg, data, finetune_epochs=args.finetune_epochs, seed=seed,
        log=lambda message: log(f'{arm} seed {seed}: {message}'))
    result.update(metrics)
    result.update(finetune_epochs=args.finetune_epochs,
                  finetune_images=len(data['finetune_index']),
                  train_images=len(data['train_labels']),
                  test_images=len(data['test_labels']),
                  torch_threads=torch.get_num_threads())
    os.makedirs(run_dir, exist_ok=True)
    with open(result_path + '.tmp', 'w') as f:
        json.dump(result, f, indent=1)
    os.replace(result_path + '.tmp', result_path)
    return result


def write_report(out_dir, log):
    from mixedae_mm.evaluation.study import markdown_table, plot, read_results
    results = read_results(out_dir)
    if not results:
        log('no finished runs yet')
        return
    with open(osp.join(out_dir, 'results.md'), 'w') as f:
        f.write(markdown_table(results))
    plot(results, osp.join(out_dir, 'results.png'))
    log(f'{len(results)} runs -> {out_dir}/results.md, results.png')


def main(argv=None):
    # first, so that a SIGTERM or Ctrl-C even during the imports ends the
    # study with one line; a pretraining passes them on to its training
    from mixedae_mm.evaluation.pretraining import run_study
    run_study(lambda: _main(parse_args(argv)), 'study')


def _main(args):
    from mixedae_mm.datasets import (FashionMNISTMissingError,
                                     fashion_mnist_files)
    from mixedae_mm.evaluation.study import planned_runs

    def log(message):
        print(f'[study {time.strftime("%H:%M:%S")}] {message}', flush=True)

    os.makedirs(args.out, exist_ok=True)
    if args.report_only:
        write_report(args.out, log)
        return
    try:
        fashion_mnist_files(args.data_root)
    except FashionMNISTMissingError as err:
        raise SystemExit(f'ablation_study.py: error: {err}')
    args.data_root = osp.abspath(args.data_root)
    runs = planned_runs(args.arms, args.seeds)
    data = load_data(args, log)
    for number, (arm, seed) in enumerate(runs, 1):
        log(f'run {number}/{len(runs)}: {arm} seed {seed}')
        run_one(arm, seed, args, data, args.cfg_options, log)
        write_report(args.out, log)


if __name__ == '__main__':
    main()
