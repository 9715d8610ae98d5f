"""Estimate the GPU hours of a config's full schedule from counted FLOPs.

Counts the FLOPs of one forward pass of the config's model on one image at
the recipe's input size (``torch.utils.flop_counter`` with CPU attention counted, on the CPU), takes a
training step as 3 forwards (forward + backward; 1 when the backbone is
frozen), multiplies by the images the schedule sees and divides by an assumed
sustained throughput: by default 40% of an A100's 312 bf16 TFLOP/s. It is an
estimate, not a measurement, and optimistic for detection (RoI ops, data
loading); use it to budget a run, then replace it with a timed GPU run.

Examples::

    python tools/analysis_tools/estimate_gpu_hours.py configs/seg/mixedae_vitb_upernet-160k_ade20k-512.py
    python tools/analysis_tools/estimate_gpu_hours.py configs/finetune/mixedae_vitb_ft-100e_in1k.py
"""
import argparse
import importlib
import os.path as osp
import sys

import torch
from mmengine.config import Config, DictAction

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))  # flop_counting
sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))

from flop_counting import flop_counter  # noqa: E402
from mixedae_mm.downstream import build_model  # noqa: E402

#: images in the training split of the datasets the recipes use
TRAIN_IMAGES = {
    'ImageNet': 1_281_167,
    'ADE20KDataset': 20_210,
    'CocoDataset': 117_266,
}
def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('config')
    parser.add_argument('--gpus', type=int, default=8,
                        help='GPUs the recipe is written for (batch per GPU '
                        'comes from the config)')
    parser.add_argument('--peak-tflops', type=float, default=312.,
                        help='peak bf16 TFLOP/s of one GPU (A100: 312)')
    parser.add_argument('--utilisation', type=float, default=0.4,
                        help='assumed fraction of the peak sustained')
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
    scope = cfg.default_scope
    cfg.model.backbone.pop('init_cfg', None)  # no checkpoint needed to count
    hw = input_size(cfg)
    model = build_model(cfg.model, scope).eval()
    with torch.no_grad(), flop_counter() as counter:
        model(torch.randn(1, 3, *hw), data_sample(scope, hw), mode='tensor')
    # forward + backward is ~3 forwards; a frozen backbone (linear probe)
    # needs no backward through it, and the head's share is negligible
    trainable = any(p.requires_grad for p in model.backbone.parameters())
    return counter.get_total_flops(), hw, 3 if trainable else 1


def images_seen(cfg, gpus):
    loader = cfg.train_dataloader
    batch = loader.batch_size * gpus
    train_cfg = cfg.train_cfg
    if 'max_iters' in train_cfg:
        return train_cfg.max_iters * batch
    dataset, repeats = loader.dataset, 1
    while 'dataset' in dataset:  # RepeatDataset and friends
        repeats *= dataset.get('times', 1)
        dataset = dataset.dataset
    return train_cfg.max_epochs * repeats * TRAIN_IMAGES[dataset.type]


def main(argv=None):
    args = parse_args(argv)
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    flops, hw, step_factor = forward_flops(cfg)
    images = images_seen(cfg, args.gpus)
    train_flops = step_factor * flops * images
    hours = train_flops / (args.peak_tflops * 1e12 * args.utilisation) / 3600
    print(f'{args.config}: {flops / 1e9:.1f} GFLOP forward per {hw[0]}x{hw[1]}'
          f' image, {images / 1e6:.2f} M images -> {hours:.0f} GPU hours at '
          f'{args.utilisation:.0%} of {args.peak_tflops:g} TFLOP/s '
          f'({hours / args.gpus:.1f} h on {args.gpus})')
    return hours


if __name__ == '__main__':
    main()
