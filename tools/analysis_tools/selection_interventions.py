"""How much a trained MixedAE's losses depend on the keys each layer's
homologous attention selects: on held-out Fashion-MNIST test images,
mixed with fixed partitions, one layer's top-k keys are replaced by the
query's own image's patches, random ones or other images' only (or its
attention update is removed), and the pretraining losses are measured
again (``mixedae_mm.analysis.selection_interventions``).

    python tools/analysis_tools/selection_interventions.py \\
        configs/study/mixedae_vit-study-p4_fmnist.py \\
        work_dirs/study/runs/mixedae_seed0/pretrain/iter_2808.pth \\
        --out docs/results/selection/mixedae_seed0.json

The checkpoint is a pretraining checkpoint (encoder, decoder and the
contrastive projector: the losses need all three), loaded strictly.
"""
import argparse
import json
import sys

if __name__ == '__main__':  # Ctrl-C during the imports below: one line
    sys.excepthook = lambda kind, *rest, hook=sys.excepthook: print(
        'selection_interventions.py: interrupted (Ctrl-C)', file=sys.stderr
    ) if issubclass(kind, KeyboardInterrupt) else hook(kind, *rest)


def parse_args(argv=None):
    from mixedae_mm.analysis.selection_interventions import INTERVENTIONS
    from mixedae_mm.cli_args import non_negative_int, positive_int
    from mixedae_mm.datasets import DEBIAN_FASHION_MNIST
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('config', nargs='?',
                        help='a MixedAE study pretraining config')
    parser.add_argument('checkpoint', nargs='?',
                        help='its pretraining checkpoint')
    parser.add_argument('--report-only', nargs='+', metavar='JSON',
                        help='only print the tables of results written by '
                        '--out before')
    parser.add_argument('--data-root', default=DEBIAN_FASHION_MNIST)
    parser.add_argument('--layers', nargs='+', type=non_negative_int,
                        help='default: every homologous-attention layer')
    parser.add_argument('--choices', nargs='+', choices=INTERVENTIONS[1:],
                        default=list(INTERVENTIONS[1:]))
    parser.add_argument('--partition-seeds', nargs='+',
                        type=non_negative_int, default=[0, 1, 2],
                        help='one set of mixing partitions each')
    parser.add_argument('--images', type=positive_int, default=4096,
                        help='test images used (the first ones)')
    parser.add_argument('--batch-size', type=positive_int, default=None,
                        help='default: the config\'s training batch')
    parser.add_argument('--out', default=None, help='write the JSON here')
    args = parser.parse_args(argv)
    if not args.report_only and not (args.config and args.checkpoint):
        parser.error('give CONFIG and CHECKPOINT (or --report-only JSON)')
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.report_only:
        return print_report(args.report_only)
    import os.path as osp
    if args.out and not osp.isdir(osp.dirname(osp.abspath(args.out))):
        raise SystemExit('selection_interventions.py: error: the folder of '
                         f'--out {args.out} does not exist: create it first')
    import torch

    from mixedae_mm.analysis.selection_interventions import \
        run_interventions
    from mixedae_mm.checkpoints import CheckpointError
    from mixedae_mm.datasets import load_fashion_mnist
    from mixedae_mm.evaluation.study import (build_model, load_strictly,
                                             preprocess)
    from mixedae_mm.utils import code_commit
    commit = code_commit()  # the code that runs, before anyone edits it
    try:
        model, cfg = build_model(args.config)
        load_strictly(model, args.checkpoint)
        raw, _ = load_fashion_mnist(args.data_root, 'test')
    except (CheckpointError, FileNotFoundError, ValueError) as err:
        raise SystemExit(f'selection_interventions.py: error: {err}') \
            from None
    layers = args.layers if args.layers is not None else \
        list(model.backbone.homo_attn_layers)
    batch_size = args.batch_size or cfg.train_dataloader.batch_size
    images = preprocess(raw[:args.images], cfg, model)
    try:
        result = run_interventions(model, images, batch_size, layers,
                                   args.choices, args.partition_seeds)
    except ValueError as err:
        raise SystemExit(f'selection_interventions.py: error: {err}') \
            from None
    result.update(config=args.config, checkpoint=args.checkpoint,
                  images=len(images), batch_size=batch_size,
                  partition_seeds=args.partition_seeds, commit=commit,
                  torch_threads=torch.get_num_threads())
    print_tables(result)
    if args.out:
        with open(args.out, 'w') as f:
            json.dump(result, f, indent=1)


def print_tables(result):
    """The change of each loss term, a table each."""
    from mixedae_mm.analysis.selection_interventions import markdown_deltas
    for term in ('loss_homo', 'loss_rec'):
        print(markdown_deltas(result, term) + '\n')


def print_report(paths):
    for path in paths:
        try:
            with open(path) as f:
                result = json.load(f)
        except (OSError, ValueError) as err:
            raise SystemExit(f'selection_interventions.py: error: {err}') \
                from None
        print(f'{path} (commit {result["commit"]}, {result["images"]} test '
              f'images, batches of {result["batch_size"]}, partition seeds '
              f'{result["partition_seeds"]})\n')
        print_tables(result)


if __name__ == '__main__':
    main()
