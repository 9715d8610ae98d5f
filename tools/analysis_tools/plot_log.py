"""Plot a training run's curves from mmengine's ``vis_data/scalars.json``.

    python tools/analysis_tools/plot_log.py WORK_DIR_OR_SCALARS_JSON \
        [--keys loss loss_rec ...] [--group-size 4] --out curves.png

Panels: the loss terms, the learning rate, the homologous accuracy (mean,
bold, and per homologous-attention layer) with its chance level ``1 / G``
as a dashed line, and the online kNN accuracy (``OnlineKNNHook``). A work dir holding several runs (one
``<timestamp>/`` folder each) is read from its latest run.
"""
import argparse
import sys

if __name__ == '__main__':  # Ctrl-C during the imports below: one line
    sys.excepthook = lambda kind, *rest, hook=sys.excepthook: print(
        'plot_log.py: interrupted (Ctrl-C)', file=sys.stderr
    ) if issubclass(kind, KeyboardInterrupt) else hook(kind, *rest)

from mixedae_mm.cli_args import positive_int
from mixedae_mm.visualization.curves import find_scalars, plot


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('log', help='work dir, run dir or scalars.json')
    parser.add_argument('--keys', nargs='+', default=None,
                        help='scalars to draw (default: loss*, lr, '
                        'homo_acc*, knn_*)')
    parser.add_argument('--group-size', type=positive_int, default=4,
                        help='G, for the chance level of homo_acc')
    parser.add_argument('--out', required=True, help='PNG to write')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    return plot(find_scalars(args.log), args.out, args.keys, args.group_size)


if __name__ == '__main__':
    sys.exit(main() and 0)
