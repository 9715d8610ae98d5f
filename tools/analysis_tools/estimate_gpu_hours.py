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
import sys

if __name__ == '__main__':  # Ctrl-C during the imports below: one line
    sys.excepthook = lambda kind, *rest, hook=sys.excepthook: print(
        'estimate_gpu_hours.py: interrupted (Ctrl-C)', file=sys.stderr
    ) if issubclass(kind, KeyboardInterrupt) else hook(kind, *rest)

from mmengine.config import Config, DictAction

from mixedae_mm.analysis.gpu_hours import (MEASURED_UTILISATION,
                                           UnknownTrainingSetError,
                                           forward_flops, gpu_hours,
                                           images_seen)
from mixedae_mm.cli_args import (existing_file, fraction, positive_float,
                                 positive_int)


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


def main(argv=None):
    args = parse_args(argv)
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    try:
        images = images_seen(cfg, args.gpus, args.train_images)
    except UnknownTrainingSetError as err:
        raise SystemExit(f'estimate_gpu_hours.py: error: {err}') from None
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
