"""Draw test scenes of the dense study with their ground truth and each
arm's prediction (mmseg's / mmdet's visualizers).

    python tools/visualization/vis_dense_predictions.py seg \\
        --model MAE docs/results/dense/runs/seg_mae_seed0/work/iter_1000.pth \\
        --model MixedAE docs/results/dense/runs/seg_mixedae_seed0/work/iter_1000.pth \\
        --out docs/images/dense_seg.png
"""
import argparse
import sys

if __name__ == '__main__':  # Ctrl-C during the imports below: one line
    sys.excepthook = lambda kind, *rest, hook=sys.excepthook: print(
        'vis_dense_predictions.py: interrupted (Ctrl-C)', file=sys.stderr
    ) if issubclass(kind, KeyboardInterrupt) else hook(kind, *rest)


def parse_args(argv=None):
    from mixedae_mm.cli_args import non_negative_int
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('task', choices=['seg', 'det'])
    parser.add_argument('--model', nargs=2, action='append', required=True,
                        metavar=('TITLE', 'CHECKPOINT'),
                        help='a trained checkpoint of the task\'s study '
                        'config and its column title (repeat)')
    parser.add_argument('--scenes', default='data/fmnist_scenes')
    parser.add_argument('--indices', nargs='+', type=non_negative_int,
                        default=[0, 1, 2, 3], help='test scenes to draw')
    parser.add_argument('--out', required=True, help='PNG to write')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    from mixedae_mm.checkpoints import CheckpointError
    from mixedae_mm.evaluation.dense_study import TASKS
    from mixedae_mm.visualization.dense import prediction_grid
    try:
        prediction_grid(args.task, TASKS[args.task], dict(args.model),
                        args.scenes, args.indices, args.out)
    except (CheckpointError, FileNotFoundError) as err:
        sys.exit(f'vis_dense_predictions.py: error: {err}')
    print(args.out)


if __name__ == '__main__':
    main()
