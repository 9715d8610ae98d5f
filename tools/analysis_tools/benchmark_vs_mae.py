"""Cost of MixedAE against mmpretrain's MAE: time, memory and FLOPs of full
training steps.

Both models at the same encoder and decoder size, the same random images;
what is measured and how is ``mixedae_mm/analysis/benchmark.py``'s
(``compare_with_mae``).

Examples::

    python tools/analysis_tools/benchmark_vs_mae.py --arch b --batch-size 8 --steps 9
    python tools/analysis_tools/benchmark_vs_mae.py --arch b --batch-size 32 --amp bf16 \\
        --steps 0 --json mem.json          # memory only
    python tools/analysis_tools/benchmark_vs_mae.py --device cuda --amp bf16 --batch-size 256

See docs/benchmark.md for the fields of ``--json`` and measured numbers.
"""
import argparse
import json
import sys
from pathlib import Path

if __name__ == '__main__':  # Ctrl-C during the imports below: one line
    sys.excepthook = lambda kind, *rest, hook=sys.excepthook: print(
        'benchmark_vs_mae.py: interrupted (Ctrl-C)', file=sys.stderr
    ) if issubclass(kind, KeyboardInterrupt) else hook(kind, *rest)

import torch

from mixedae_mm.analysis.benchmark import compare_with_mae, print_report
from mixedae_mm.cli_args import (non_negative_int, positive_float,
                                 positive_int, positive_multiple_of)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--arch', default='b',
                        help="ViT size: mmpretrain's (b, l, ...) or "
                        'demo-tiny')
    parser.add_argument('--img-size', type=positive_int, default=224)
    parser.add_argument('--patch-size', type=positive_int, default=16)
    parser.add_argument('--decoder', type=positive_int, nargs=3,
                        default=(512, 8, 16),
                        metavar=('DIM', 'DEPTH', 'HEADS'))
    parser.add_argument('--batch-size', default=8,
                        type=positive_multiple_of(4, 'the group size'),
                        help='images per step (a multiple of the group '
                        'size 4)')
    parser.add_argument('--steps', type=non_negative_int, default=9,
                        help='timed steps per model (0: memory and FLOPs '
                        'only)')
    parser.add_argument('--warmup', type=non_negative_int, default=2)
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available()
                        else 'cpu')
    parser.add_argument('--amp', choices=('none', 'bf16', 'fp16'),
                        default='none', help='autocast dtype')
    parser.add_argument('--compile', action='store_true',
                        help='torch.compile each model.loss (what '
                        "mmengine's compile=True does to train_step)")
    parser.add_argument('--with-cp', action='store_true',
                        help='activation checkpointing of encoder and '
                        'decoder blocks, both models')
    parser.add_argument('--no-split', action='store_true',
                        help='skip the cost split')
    parser.add_argument('--no-flops', action='store_true')
    parser.add_argument('--peak-tflops', type=positive_float,
                        help='device peak for MFU (default: table by name)')
    parser.add_argument('--threads', type=positive_int,
                        help='torch.set_num_threads on the CPU')
    parser.add_argument('--malloc', choices=('pinned', 'default'),
                        default='pinned',
                        help="CPU: pin glibc malloc's mmap/trim thresholds "
                        'so that page faults do not depend on which model '
                        'stepped before (default), or leave them adaptive')
    parser.add_argument('--profile-ops', type=non_negative_int, default=0,
                        metavar='N',
                        help='after the timed steps, profile N more steps '
                        'of each model, interleaved (torch.profiler): self '
                        'time per op, the totals and their ratio, the ops '
                        'that differ most')
    parser.add_argument('--json', metavar='OUT', help='write results here')
    args = parser.parse_args(argv)
    side, rest = divmod(args.img_size, args.patch_size)
    if rest:
        parser.error(f'--img-size {args.img_size} is not a multiple of '
                     f'--patch-size {args.patch_size}')
    if side * side % 4:
        parser.error(f'{side}x{side} = {side * side} patches per image: '
                     'pick --img-size / --patch-size so that the patch '
                     'count is a multiple of the group size 4')
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    report = compare_with_mae(**vars(args))
    print_report(report)
    if args.json:
        out = Path(args.json)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=1))
        print(f'written: {out}')
    return report


if __name__ == '__main__':
    main()
