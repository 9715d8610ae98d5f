"""Weighted kNN accuracy of a pretrained encoder's frozen features.

    python tools/analysis_tools/knn_eval.py CONFIG CHECKPOINT \
        [--data-config CONFIG] [--data-root DIR] [--k 20] [--launcher pytorch]

The code is ``mixedae_mm/cli/knn_eval.py`` (its docstring tells the
protocol); an installed package has it as the ``mixedae-knn`` command.
"""
import sys

if __name__ == '__main__':  # Ctrl-C during the imports below: one line
    sys.excepthook = lambda kind, *rest, hook=sys.excepthook: print(
        'knn_eval.py: interrupted (Ctrl-C)', file=sys.stderr
    ) if issubclass(kind, KeyboardInterrupt) else hook(kind, *rest)

from mixedae_mm.cli.knn_eval import main, parse_args  # noqa: F401

if __name__ == '__main__':
    sys.exit(main() and 0)
