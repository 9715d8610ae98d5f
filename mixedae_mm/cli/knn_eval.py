"""Weighted kNN accuracy of a pretrained encoder's frozen features.

Extracts features of the un-mixed encoder (``FeatureExtractor``'s: the
pretraining config's ``test_pipeline``, the last block's cls token or mean
patch token) for the training and validation splits of a classification
config's datasets, then classifies each validation image by its k nearest
training images, each voting with weight exp(cosine similarity / T) (Wu et
al., 2018; mmselfsup's kNN probe). Prints the top-1/top-5 accuracies (%) as
JSON on the last line.

Launched by torchrun with ``--launcher pytorch``, every process extracts
the features of its share of each split (mmengine's ``DefaultSampler``
without shuffling: rank ``r`` takes images ``r, r + W, ...``, the dataset
padded to a multiple of ``W``) and the shares are gathered in dataset
order, so the result equals a one-process run.

``python tools/analysis_tools/knn_eval.py`` in a clone, the
``mixedae-knn`` command where the package is installed. Example::

    python tools/analysis_tools/knn_eval.py configs/mixedae_vitb_1600e.py \\
        work_dirs/mixedae_vitb_1600e/epoch_1600.pth --data-root data/imagenet
    torchrun --nproc_per_node 8 tools/analysis_tools/knn_eval.py \\
        configs/mixedae_vitb_1600e.py epoch_1600.pth --data-root data/imagenet \\
        --launcher pytorch
"""
import argparse
import json
import os
import os.path as osp
import sys

import torch

#: the default --data-config, by name
LINEAR_PROBE_RECIPE = 'mixedae_vitb_linear-90e_in1k'


def parse_args(argv=None):
    from mixedae_mm.cli_args import (config_file_or_recipe, non_negative_int,
                                     positive_float, positive_int)
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('config', type=config_file_or_recipe,
                        help='pretraining config (or recipe name)')
    parser.add_argument('checkpoint', help='its checkpoint')
    parser.add_argument(
        '--data-config', default=LINEAR_PROBE_RECIPE,
        help='config (or recipe name) whose train_dataloader/val_dataloader '
        'datasets are used (their pipelines are replaced by the model '
        'config\'s test_pipeline); default: the linear probe recipe, '
        'ImageNet')
    parser.add_argument('--data-root', help="override the datasets' "
                        'data_root')
    parser.add_argument('--k', type=positive_int, default=20)
    parser.add_argument('--temperature', type=positive_float, default=0.07)
    parser.add_argument('--feature', choices=['cls', 'mean'], default='cls',
                        help='cls token or mean of the patch tokens')
    parser.add_argument('--batch-size', type=positive_int, default=128)
    parser.add_argument('--num-workers', type=non_negative_int, default=4)
    parser.add_argument('--device', default=None,
                        help='default: cuda if available, else cpu')
    parser.add_argument('--save-features', metavar='PATH',
                        help='also save the features and labels of both '
                        'splits (dataset order) to this .pth file')
    parser.add_argument('--launcher', choices=['none', 'pytorch'],
                        default='none',
                        help='pytorch: one process per GPU under torchrun '
                        '(gloo on a machine without GPUs)')
    return parser.parse_args(argv)


def check_split_folders(data_cfg, data_root=None) -> None:
    """Exit with one line naming a split's missing image folder (ImageNet
    layout: ``data_root/train``, ``data_root/val``) before anything is
    loaded; a dataset whose folder cannot be told is left to its loader."""
    for split in ('train', 'val'):
        dataset = data_cfg[f'{split}_dataloader'].dataset
        root = data_root or dataset.get('data_root', '')
        prefix = dataset.get('data_prefix') or dataset.get('split')
        if isinstance(prefix, dict):
            prefix = prefix.get('img_path')
        if not prefix or '://' in str(root):
            continue
        folder = osp.join(root, prefix)
        if not osp.isdir(folder):
            raise SystemExit(
                f'error: no {split} split: {folder} is not a folder; '
                '--data-root must hold the train/ and val/ image folders')


def gather_in_dataset_order(local: torch.Tensor, size: int) -> torch.Tensor:
    """Every rank's ``(n, ...)`` share -> the ``(size, ...)`` whole.

    ``DefaultSampler(shuffle=False)`` pads the dataset to ``n * W`` images
    and gives rank ``r`` images ``r, r + W, ...``: the shares have equal
    length, and interleaving them restores dataset order (the padding,
    repeated first images, is cut off).
    """
    import torch.distributed as dist
    if not (dist.is_available() and dist.is_initialized()):
        return local[:size]
    shares = [torch.empty_like(local) for _ in range(dist.get_world_size())]
    dist.all_gather(shares, local.contiguous())
    whole = torch.stack(shares, dim=1).flatten(0, 1)
    return whole[:size]


def prepare_output_file(path: str, flag: str) -> None:
    """Make sure ``path`` can be written before hours of work: its
    folder is created; a folder as ``path`` is refused with one line."""
    if osp.isdir(path):
        raise SystemExit(f'error: {flag} {path} is a folder: give a file '
                         f'name, e.g. {osp.join(path, "features.pth")}')
    folder = osp.dirname(osp.abspath(path))
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as err:
        raise SystemExit(f'error: {flag} {path}: cannot create its folder '
                         f'({err.strerror}); give a writable path') from None
    if not os.access(folder, os.W_OK):
        raise SystemExit(f'error: {flag} {path}: {folder} is not writable; '
                         'give a writable path')


def main(argv=None):
    args = parse_args(argv)
    if args.save_features:
        prepare_output_file(args.save_features, '--save-features')
    from mixedae_mm.engine.launch import process_group_torn_down_at_exit
    with process_group_torn_down_at_exit():
        return evaluate(args)


def evaluate(args):
    from mmengine.config import Config
    from mmengine.registry import DefaultScope
    from mmengine.runner import Runner
    from mmpretrain import get_model

    from mmengine.utils import ProgressBar

    import mixedae_mm
    from mixedae_mm.evaluation import (extract_features, knn_accuracy,
                                       weighted_knn_scores)

    from . import resolve_config

    # an unknown recipe name: one line, before any process group
    config = resolve_config(args.config)
    rank = 0
    if args.launcher == 'pytorch':
        import os

        import torch.distributed as dist
        use_cuda = torch.cuda.is_available() and args.device != 'cpu'
        if use_cuda:
            torch.cuda.set_device(int(os.environ.get('LOCAL_RANK', 0)))
        dist.init_process_group(backend='nccl' if use_cuda else 'gloo')
        rank = dist.get_rank()
        if use_cuda:
            args.device = f'cuda:{torch.cuda.current_device()}'
    device = args.device or ('cuda' if torch.cuda.is_available() else 'cpu')
    try:  # mixedae_mm makes get_model refuse a checkpoint that does not fit
        model = get_model(config, pretrained=args.checkpoint, device=device)
    except (mixedae_mm.checkpoints.CheckpointError,
            FileNotFoundError) as error:  # a mismatch, no checkpoint at all
        raise SystemExit(f'error: {error}') from None
    if 'test_dataloader' not in model._config:
        raise SystemExit(f'{args.config} states no test_pipeline: add one '
                         '(see configs/mixedae_vitb_1600e.py)')
    pipeline = model._config.test_dataloader.dataset.pipeline
    data_cfg = Config.fromfile(resolve_config(args.data_config))
    check_split_folders(data_cfg, args.data_root)
    loaders = {}
    for split in ('train', 'val'):
        dataset = data_cfg[f'{split}_dataloader'].dataset
        dataset.pipeline = pipeline
        if args.data_root:
            dataset.data_root = args.data_root
        with DefaultScope.overwrite_default_scope('mmpretrain'):
            loaders[split] = Runner.build_dataloader(dict(
                dataset=dataset, batch_size=args.batch_size,
                num_workers=args.num_workers,
                sampler=dict(type='DefaultSampler', shuffle=False),
                collate_fn=dict(type='default_collate')))
    splits = {}
    for split, loader in loaders.items():
        progress = (ProgressBar(len(loader), file=sys.stderr)
                    if rank == 0 else None)
        model.eval()
        feats, labels = extract_features(model, loader, args.feature,
                                         progress)
        if progress is not None:
            print(file=sys.stderr)
        size = len(loader.dataset)
        splits[split] = (gather_in_dataset_order(feats, size).cpu(),
                         gather_in_dataset_order(labels, size).cpu())
    (train_feats, train_labels), (val_feats, val_labels) = (
        splits['train'], splits['val'])
    num_classes = int(max(train_labels.max(), val_labels.max())) + 1
    scores = weighted_knn_scores(
        train_feats.to(device), train_labels.to(device),
        val_feats.to(device), num_classes, k=args.k,
        temperature=args.temperature)
    result = dict(knn_accuracy(scores, val_labels), k=args.k,
                  temperature=args.temperature, feature=args.feature,
                  train_images=len(train_labels),
                  val_images=len(val_labels))
    if rank == 0:
        # the result first: it is what the hours of extraction were for
        print(json.dumps(result), flush=True)
        if args.save_features:
            from mixedae_mm import checkpoints
            try:
                checkpoints.atomic_write(
                    args.save_features, lambda f: torch.save(dict(
                        train_feats=train_feats, train_labels=train_labels,
                        val_feats=val_feats, val_labels=val_labels), f))
            except OSError as err:  # e.g. the disk filled up meanwhile
                raise SystemExit(
                    f'error: --save-features {args.save_features}: '
                    f'{err.strerror or err}; the result above is complete'
                ) from None
            print(f'features -> {args.save_features}', file=sys.stderr)
    return result


def console_main():
    """``mixedae-knn``."""
    sys.argv[0] = 'mixedae-knn'  # argparse's program name
    main()
