"""Compose the dense study's scenes from Fashion-MNIST items and write them
for mmsegmentation (PNG label maps) and mmdetection (COCO annotations).

    python tools/dataset_converters/fmnist_scenes.py --out data/fmnist_scenes

Training scenes use the training split's items, test scenes the test
split's; the same ``--seed`` and sizes give the same files. See
``mixedae_mm/datasets/fmnist_scenes.py`` for the layout and
docs/results.md ("Dense transfer") for why the scenes are synthetic.
"""
import argparse
import sys

if __name__ == '__main__':  # Ctrl-C during the imports below: one line
    sys.excepthook = lambda kind, *rest, hook=sys.excepthook: print(
        'fmnist_scenes.py: interrupted (Ctrl-C)', file=sys.stderr
    ) if issubclass(kind, KeyboardInterrupt) else hook(kind, *rest)


def parse_args(argv=None):
    from mixedae_mm.datasets import DEBIAN_FASHION_MNIST
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--data-root', default=DEBIAN_FASHION_MNIST,
                        help='folder with the four Fashion-MNIST IDX files')
    parser.add_argument('--out', required=True, help='scene set folder')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--num-train', type=int, default=10000)
    parser.add_argument('--num-test', type=int, default=2000)
    parser.add_argument('--canvas-size', type=int, default=64)
    parser.add_argument('--min-items', type=int, default=2)
    parser.add_argument('--max-items', type=int, default=4)
    parser.add_argument('--min-scale', type=float, default=0.8)
    parser.add_argument('--max-scale', type=float, default=1.6)
    parser.add_argument('--min-visible-area', type=int, default=40,
                        help='an item with fewer visible pixels is removed '
                        'from its scene')
    args = parser.parse_args(argv)
    checks = [
        (args.seed >= 0, '--seed must be 0 or more'),
        (args.num_train >= 1 and args.num_test >= 1,
         '--num-train and --num-test must be at least 1'),
        (1 <= args.min_items <= args.max_items,
         'need 1 <= --min-items <= --max-items'),
        (0 < args.min_scale <= args.max_scale,
         'need 0 < --min-scale <= --max-scale'),
        (round(28 * args.max_scale) <= args.canvas_size,
         f'an item scaled by --max-scale ({round(28 * args.max_scale)} px) '
         f'must fit on --canvas-size ({args.canvas_size})'),
        (args.min_visible_area >= 1, '--min-visible-area must be at least 1'),
    ]
    for ok, message in checks:
        if not ok:
            parser.error(message)
    return args


def compose_options(args) -> dict:
    return dict(canvas_size=args.canvas_size,
                num_items=(args.min_items, args.max_items),
                scale=(args.min_scale, args.max_scale),
                min_visible_area=args.min_visible_area)


def main(argv=None):
    args = parse_args(argv)
    from mixedae_mm.datasets import FashionMNISTMissingError
    from mixedae_mm.datasets.fmnist_scenes import build_scene_set
    try:
        instances = build_scene_set(
            args.data_root, args.out, args.seed, args.num_train,
            args.num_test, **compose_options(args))
    except (FashionMNISTMissingError, ValueError) as err:
        sys.exit(f'fmnist_scenes.py: error: {err}')
    print(f'{args.num_train} training scenes ({instances["train"]} '
          f'instances) and {args.num_test} test scenes '
          f'({instances["test"]} instances) -> {args.out}')


if __name__ == '__main__':
    main()
