"""What the study command lines share (``tools/analysis_tools/
ablation_study.py``, ``dense_study.py``, ``label_budget_study.py`` and, for
its options, ``layer_probes.py``): a
stop signal or a failed run ends them with one line
(:func:`~.pretraining.run_study`), they log with the time,
``--report-only`` rewrites the report, the Fashion-MNIST files are checked
before anything runs, and their errors name the tool.

A study tool gives :func:`study_main` its argument parser and the body that
runs its plan; its arguments have ``out``, ``data_root`` and
``report_only`` (:func:`add_study_arguments` adds the options the study
tools spell the same way).
"""
import contextlib
import os
import os.path as osp
import sys
import time
from typing import Callable, Optional, Sequence

from .pretraining import run_study

__all__ = ['add_study_arguments', 'study_main', 'write_report', 'exit_on']


def add_study_arguments(parser, *, limits: bool = True,
                        cfg_options_help: Optional[str] = None,
                        report: str = 'results.md / results.png') -> None:
    """The options every study tool shares: ``--data-root``, with
    ``limits`` ``--limit-train`` / ``--limit-test`` (tests shrink a study
    through them), with ``cfg_options_help`` ``--cfg-options`` (what the
    options reach differs per tool, so each says it), and
    ``--report-only`` (rewrites ``report``)."""
    from ..cli_args import positive_int
    from ..datasets import DEBIAN_FASHION_MNIST
    parser.add_argument('--data-root', default=DEBIAN_FASHION_MNIST,
                        help='folder with the four Fashion-MNIST IDX files '
                        '(.gz or not); default: where Debian\'s '
                        'dataset-fashion-mnist puts them')
    if limits:
        parser.add_argument('--limit-train', type=positive_int,
                            default=None, help='draw from the first N '
                            'training images only (tests)')
        parser.add_argument('--limit-test', type=positive_int,
                            default=None, help='evaluate on the first N '
                            'test images only (tests)')
    if cfg_options_help:
        parser.add_argument('--cfg-options', nargs='+', default=[],
                            metavar='KEY=VALUE', help=cfg_options_help)
    parser.add_argument('--report-only', action='store_true',
                        help=f'only rewrite {report}')


def write_report(out_dir: str, tables, log: Callable[[str], None]) -> None:
    """``OUT/results.md`` and ``OUT/results.png`` from every finished run's
    ``result.json``; ``tables`` is the study's module
    (``evaluation.study`` or ``evaluation.dense_study``): its
    ``read_results``, ``markdown_table`` and ``plot``."""
    results = tables.read_results(out_dir)
    if not results:
        log('no finished runs yet')
        return
    with open(osp.join(out_dir, 'results.md'), 'w') as f:
        f.write(tables.markdown_table(results))
    tables.plot(results, osp.join(out_dir, 'results.png'))
    log(f'{len(results)} runs -> {out_dir}/results.md, results.png')


@contextlib.contextmanager
def exit_on(tool: str, *errors):
    """One of ``errors`` in the block ends the study with
    ``<tool>: error: <message>`` (status 1)."""
    try:
        yield
    except errors as err:
        sys.exit(f'{tool}: error: {err}')


def study_main(argv: Optional[Sequence[str]], parse_args, run_plan,
               *, prog: str, tool: str, tables) -> None:
    """Parse ``argv`` and run the study: ``run_plan(args, log)`` makes the
    runs (after the data check), or with ``--report-only`` only the report
    is rewritten (:func:`write_report` with ``tables``). ``prog`` names the
    study in its log lines (``[prog HH:MM:SS] ...``), ``tool`` in its
    errors."""
    run_study(lambda: _study(parse_args(argv), run_plan, prog, tool,
                             tables), prog)


def _study(args, run_plan, prog, tool, tables) -> None:
    from ..datasets import FashionMNISTMissingError, fashion_mnist_files

    def log(message):
        print(f'[{prog} {time.strftime("%H:%M:%S")}] {message}', flush=True)

    os.makedirs(args.out, exist_ok=True)
    if args.report_only:
        write_report(args.out, tables, log)
        return
    with exit_on(tool, FashionMNISTMissingError):
        fashion_mnist_files(args.data_root)
    run_plan(args, log)
