"""Frozen features layer by layer: the classification study's linear probe
and kNN on the mean patch token and on the cls token after every encoder
layer of the study's pretrained encoders; the table and the plot.

    python tools/analysis_tools/layer_probes.py
    python tools/analysis_tools/layer_probes.py --arms mae mixedae \\
        --seeds 0 --pretrain-dir work_dirs/study/runs

Encoders: the classification study's pretrainings (``--pretrain-dir``,
default ``docs/results/runs``: ``<arm>_seed<s>/pretrain/`` with
``last_checkpoint`` and a finished ``timing.json``), loaded strictly. A
missing or unfinished one is an error: pretrain it with
``tools/analysis_tools/ablation_study.py``; this tool pretrains nothing.
The images and probe settings are the study's (``ablation_study.py``'s
defaults), so the final-norm row is the study's frozen evaluation of the
same checkpoint; where the run folder holds the study's ``result.json``
the JSON records the difference.

Resumable: a run whose ``OUT/<arm>_seed<s>.json`` exists is skipped. Each
JSON holds every row, the checkpoint and its SHA-256, the commit and the
wall time; the tool writes ``OUT/layer_probes.md`` and the plot
(``--plot``); ``--report-only`` rebuilds them. See docs/results.md,
"Frozen features layer by layer".
"""
import argparse
import json
import os
import os.path as osp
import sys
import time

if __name__ == '__main__':  # Ctrl-C during the imports below: one line
    sys.excepthook = lambda kind, *rest, hook=sys.excepthook: print(
        'layer_probes.py: interrupted (Ctrl-C)', file=sys.stderr
    ) if issubclass(kind, KeyboardInterrupt) else hook(kind, *rest)

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
#: the arms issue 33 asks for: MAE, MixedAE and the two ablations
DEFAULT_ARMS = ('mae', 'mixedae', 'naive_mixing', 'homo_attn_only')


def parse_args(argv=None):
    from mixedae_mm.cli_args import non_negative_int, positive_int
    from mixedae_mm.evaluation.study_cli import add_study_arguments
    from mixedae_mm.evaluation.study import ARMS
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--arms', nargs='+', default=list(DEFAULT_ARMS),
                        choices=[arm for arm, config in ARMS.items()
                                 if config],
                        help='default: %(default)s, each with its planned '
                        'seeds unless --seeds')
    parser.add_argument('--seeds', nargs='+', type=non_negative_int,
                        help='the same seeds for every arm')
    parser.add_argument('--pretrain-dir', default='docs/results/runs',
                        help='the classification study\'s run folders: '
                        'encoders are read from <arm>_seed<s>/pretrain/')
    parser.add_argument('--out', default='docs/results/layer_probes',
                        help='one JSON per run and layer_probes.md')
    parser.add_argument('--plot', default='docs/images/layer_probes.png')
    parser.add_argument('--frozen-per-class', type=positive_int,
                        default=1000, help='training images per class for '
                        'the probes (the study\'s default)')
    add_study_arguments(parser, report='the table and the plot')
    return parser.parse_args(argv)


def finished_checkpoint(work_dir):
    """``(checkpoint, None)`` of a finished pretraining in ``work_dir``, or
    ``(None, why not)``."""
    pointer = osp.join(work_dir, 'last_checkpoint')
    if not osp.isfile(pointer):
        return None, 'no last_checkpoint'
    timing_path = osp.join(work_dir, 'timing.json')
    if not osp.isfile(timing_path):
        return None, 'no timing.json'
    with open(timing_path) as f:
        if not json.load(f).get('done'):
            return None, 'timing.json: not done'
    with open(pointer) as f:
        checkpoint = f.read().strip()
    if not osp.isfile(checkpoint):  # a folder moved since it was written
        checkpoint = osp.join(work_dir, osp.basename(checkpoint))
    if not osp.isfile(checkpoint):
        return None, f'last_checkpoint names {checkpoint}, missing'
    return checkpoint, None


def checkpoints_or_exit(runs, args):
    """``{(arm, seed): checkpoint}`` of the runs to make; exits with one
    line naming every folder without a finished pretraining."""
    found, missing = {}, []
    for arm, seed in runs:
        work_dir = osp.join(args.pretrain_dir, f'{arm}_seed{seed}',
                            'pretrain')
        checkpoint, why = finished_checkpoint(work_dir)
        if checkpoint is None:
            missing.append((arm, seed, f'{work_dir} ({why})'))
        else:
            found[arm, seed] = checkpoint
    if missing:
        arms = ' '.join(dict.fromkeys(arm for arm, _, _ in missing))
        seeds = ' '.join(str(s) for s in sorted({s for _, s, _ in missing}))
        study_out = osp.dirname(osp.normpath(args.pretrain_dir))
        sys.exit('layer_probes.py: error: no finished pretraining in '
                 f'{", ".join(folder for _, _, folder in missing)}: '
                 'pretrain it first with python '
                 f'tools/analysis_tools/ablation_study.py --out {study_out} '
                 f'--arms {arms} --seeds {seeds} (this tool pretrains '
                 'nothing)')
    return found


def sha256(path):
    import hashlib
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(1 << 20), b''):
            digest.update(block)
    return digest.hexdigest()


def run_one(arm, seed, checkpoint, args, data, log):
    import torch

    from mixedae_mm.checkpoints import CheckpointMismatchError
    from mixedae_mm.evaluation.layer_probes import (compare_with_study,
                                                    probe_study_encoder,
                                                    study_result)
    from mixedae_mm.evaluation.study import ARMS, build_model, load_strictly
    path = osp.join(args.out, f'{arm}_seed{seed}.json')
    start = time.perf_counter()
    model, cfg = build_model(osp.join(ROOT, ARMS[arm]))
    try:
        load_strictly(model, checkpoint)
    except CheckpointMismatchError as err:
        sys.exit(f'layer_probes.py: error: {err}')
    log(f'{arm} seed {seed}: {checkpoint}')
    rows = probe_study_encoder(
        model, cfg, data, seed=seed,
        log=lambda message: log(f'{arm} seed {seed}: {message}'))
    run_dir = osp.dirname(osp.dirname(checkpoint))
    study = study_result(run_dir)
    result = dict(
        arm=arm, seed=seed, config=ARMS[arm], checkpoint=checkpoint,
        checkpoint_sha256=sha256(checkpoint), commit=args.commit,
        probe_seed=seed, rows=rows,
        study_result=(osp.join(run_dir, 'result.json') if study else None),
        final_norm_vs_study=(compare_with_study(rows, study) if study
                             else None),
        train_images=len(data['train_labels']),
        test_images=len(data['test_labels']),
        frozen_per_class=args.frozen_per_class,
        seconds=round(time.perf_counter() - start, 1),
        torch_threads=torch.get_num_threads())
    if study:
        log(f'{arm} seed {seed}: final norm minus the study: ' + ', '.join(
            f'{probe} {check["difference"]:+.2f}'
            for probe, check in result['final_norm_vs_study'].items()))
    os.makedirs(args.out, exist_ok=True)
    with open(path + '.tmp', 'w') as f:
        json.dump(result, f, indent=1)
    os.replace(path + '.tmp', path)
    log(f'{arm} seed {seed}: {path} ({result["seconds"]:.0f} s)')


def write_report(args, log):
    from mixedae_mm.evaluation.layer_probes import (markdown_table, plot,
                                                    read_results)
    results = read_results(args.out)
    if not results:
        log(f'no finished runs in {args.out} yet')
        return
    table = osp.join(args.out, 'layer_probes.md')
    with open(table, 'w') as f:
        f.write(markdown_table(results))
    os.makedirs(osp.dirname(osp.abspath(args.plot)), exist_ok=True)
    plot(results, args.plot)
    log(f'{len(results)} runs -> {table}, {args.plot}')


def main(argv=None):
    args = parse_args(argv)

    def log(message):
        print(f'[layer_probes {time.strftime("%H:%M:%S")}] {message}',
              flush=True)

    if args.report_only:
        write_report(args, log)
        return
    from mixedae_mm.datasets import FashionMNISTMissingError
    from mixedae_mm.utils import code_commit
    from mixedae_mm.evaluation.study import load_study_data, planned_runs
    args.commit = code_commit()  # of the code that runs, read at its start
    runs = []
    for arm, seed in planned_runs(args.arms, args.seeds):
        path = osp.join(args.out, f'{arm}_seed{seed}.json')
        if osp.isfile(path):
            log(f'{arm} seed {seed}: done already ({path})')
        else:
            runs.append((arm, seed))
    checkpoints = checkpoints_or_exit(runs, args)
    if runs:
        try:
            # the study's frozen subset; the fine-tuning subset drawn
            # inside it (the study's 200 a class) is not used here
            data = load_study_data(
                args.data_root, args.frozen_per_class,
                min(200, args.frozen_per_class), args.limit_train,
                args.limit_test, log)
        except (FashionMNISTMissingError, ValueError) as err:
            sys.exit(f'layer_probes.py: error: {err}')
    for number, (arm, seed) in enumerate(runs, 1):
        log(f'run {number}/{len(runs)}: {arm} seed {seed}')
        run_one(arm, seed, checkpoints[arm, seed], args, data, log)
        write_report(args, log)
    if not runs:
        write_report(args, log)


if __name__ == '__main__':
    main()
