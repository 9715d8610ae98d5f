"""Estimate the GPU hours of a config's full schedule.

GPU hours = images the schedule sees / training images per second of one
GPU / 3600. Give the throughput with ``--images-per-second``, from a timed
run of this config (mmengine logs ``time`` per iteration: per-GPU batch /
time) or from a published run of the same model: that is the estimate to
trust. Without it the tool falls back on counted FLOPs
(``torch.utils.flop_counter`` with CPU attention counted, on the CPU, at the
recipe's input size): for a transfer config one forward of one image, a
training step taken as 3 forwards (1 when the backbone is frozen); for a
pretraining config the forward and backward of a mixing group, per image.
It divides them by ``--peak-tflops`` x ``--utilisation``; the default
utilisation, 10% of the peak, is about what measured MAE runs reached
(docs/transfer.md, "Costs"), far below what FLOP-based estimates usually
assume.

Examples::

    # from a measured throughput (mmpretrain's MAE ViT-B log: 510 images/s
    # per A100, over MixedAE's step-time ratio to MAE, 1.016)
    python tools/analysis_tools/estimate_gpu_hours.py \\
        configs/mixedae_vitb_1600e.py --images-per-second 502
    # from counted FLOPs
    python tools/analysis_tools/estimate_gpu_hours.py \\
        configs/seg/mixedae_vitb_upernet-160k_ade20k-512.py
"""
import argparse
import importlib
import sys

if __name__ == '__main__':  # Ctrl-C during the imports below: one line
    sys.excepthook = lambda kind, *rest, hook=sys.excepthook: print(
        'estimate_gpu_hours.py: interrupted (Ctrl-C)', file=sys.stderr
    ) if issubclass(kind, KeyboardInterrupt) else hook(kind, *rest)

import torch
from mmengine.config import Config, DictAction

from mixedae_mm.analysis.flop_counting import flop_counter
from mixedae_mm.cli_args import (existing_file, fraction, positive_float,
                                 positive_int)
from mixedae_mm.downstream import build_model
from mixedae_mm.visualization import can_reconstruct

#: images in the training split of the datasets the recipes use
TRAIN_IMAGES = {
    'ImageNet': 1_281_167,
    'ADE20KDataset': 20_210,
    'CocoDataset': 117_266,
}
#: the share of the bf16/fp16 peak that measured MAE runs reached
#: (docs/transfer.md, "Costs"): the FLOP-based fallback's default
MEASURED_UTILISATION = 0.1


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('config', type=existing_file)
    parser.add_argument('--gpus', type=positive_int, default=8,
                        help='GPUs the recipe is written for (batch per GPU '
                        'comes from the config)')
    parser.add_argument('--images-per-second', type=positive_float,
                        metavar='IPS',
                        help='measured training throughput of one GPU '
                        '(images/s); replaces the FLOP-based rate')
    parser.add_argument('--peak-tflops', type=positive_float, default=312.,
                        help='FLOP-based only: peak bf16 TFLOP/s of one GPU '
                        '(A100: 312)')
    parser.add_argument('--utilisation', type=fraction,
                        default=MEASURED_UTILISATION,
                        help='FLOP-based only: the fraction of the peak '
                        'sustained, in (0, 1] (default: about what measured '
                        'MAE runs reached)')
    parser.add_argument('--train-images', type=positive_int, metavar='N',
                        help='images in one epoch of the training set '
                        '(default: known for ImageNet, ADE20K, COCO)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction)
    return parser.parse_args(argv)


def input_size(cfg):
    """(H, W) the model trains on, from the config."""
    # the recipes crop or pad to the backbone's img_size (LSJ pads to 1024)
    size = cfg.model.backbone.get('img_size', 224)
    return (size, size) if isinstance(size, int) else tuple(size)


def data_sample(scope, hw):
    if scope == 'mmpretrain':
        return None
    module = importlib.import_module(f'{scope}.structures')
    sample_cls = module.SegDataSample if scope == 'mmseg' else \
        module.DetDataSample
    sample = sample_cls()
    sample.set_metainfo(
        dict(img_shape=hw, pad_shape=hw, ori_shape=hw, batch_input_shape=hw,
             scale_factor=(1., 1.)))
    return [sample]


def forward_flops(cfg) -> float:
    """``(FLOPs, (H, W), forwards per training step)`` of one image: one
    forward of a transfer model; a pretraining model's whole step (forward
    and backward counted, factor 1)."""
    scope = cfg.default_scope
    cfg.model.backbone.pop('init_cfg', None)  # no checkpoint needed to count
    hw = input_size(cfg)
    model = build_model(cfg.model, scope).eval()
    if can_reconstruct(model):  # a MixedAE pretraining model
        return pretraining_step_flops(model, hw), hw, 1
    with torch.no_grad(), flop_counter() as counter:
        model(torch.randn(1, 3, *hw), data_sample(scope, hw), mode='tensor')
    # forward + backward is ~3 forwards; a frozen backbone (linear probe)
    # needs no backward through it, and the head's share is negligible
    trainable = any(p.requires_grad for p in model.backbone.parameters())
    return counter.get_total_flops(), hw, 3 if trainable else 1


def pretraining_step_flops(model, hw) -> float:
    """FLOPs per image of a MixedAE training step (forward + backward of
    ``model.loss``, as benchmark_vs_mae.py counts them) on one mixing
    group: the encoder sees a quarter of the patches of each image, so one
    forward of the full ViT would overcount."""
    from mixedae_mm.analysis import Trainer
    group = model.backbone.group_size
    trainer = Trainer(model, torch.device('cpu'), 'none', False)
    torch.manual_seed(0)
    return trainer.flops(torch.randn(group, 3, *hw)) / group


def images_seen(cfg, gpus, train_images=None):
    """Images the schedule trains on: iterations x total batch, or epochs x
    the training set (``train_images``, else the size of a known dataset
    type)."""
    loader = cfg.train_dataloader
    batch = loader.batch_size * gpus
    train_cfg = cfg.train_cfg
    if 'max_iters' in train_cfg:
        return train_cfg.max_iters * batch
    dataset, repeats = loader.dataset, 1
    while 'dataset' in dataset:  # RepeatDataset and friends
        repeats *= dataset.get('times', 1)
        dataset = dataset.dataset
    if train_images is None:
        if dataset.type not in TRAIN_IMAGES:
            raise SystemExit(
                f'estimate_gpu_hours.py: error: the size of a {dataset.type}'
                f' training set is not known (only {sorted(TRAIN_IMAGES)}): '
                'pass --train-images N')
        train_images = TRAIN_IMAGES[dataset.type]
    return train_cfg.max_epochs * repeats * train_images


def gpu_hours(images: int, images_per_second: float) -> float:
    """GPU hours to train on ``images`` at ``images_per_second`` per GPU."""
    return images / images_per_second / 3600


def main(argv=None):
    args = parse_args(argv)
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    images = images_seen(cfg, args.gpus, args.train_images)
    if args.images_per_second:
        rate = args.images_per_second
        basis = f'{rate:g} images/s per GPU (given)'
    else:
        flops, hw, step_factor = forward_flops(cfg)
        sustained = args.peak_tflops * 1e12 * args.utilisation
        rate = sustained / (step_factor * flops)
        basis = (f'{step_factor * flops / 1e9:.1f} GFLOP per {hw[0]}x{hw[1]} '
                 f'image per step at {args.utilisation:.0%} '
                 f'of {args.peak_tflops:g} TFLOP/s = {rate:.1f} images/s per '
                 'GPU (FLOP-based; pass --images-per-second from a timed '
                 'run)')
    hours = gpu_hours(images, rate)
    print(f'{args.config}: {images / 1e6:.2f} M images at {basis} -> '
          f'{hours:,.0f} GPU hours ({hours / args.gpus:,.1f} h on '
          f'{args.gpus})')
    return hours


if __name__ == '__main__':
    main()
