"""Side-by-side cost of one MixedAE and one mmpretrain MAE training step.

Both models have the same encoder and decoder sizes; per step MixedAE runs
``B/G`` encoder sequences of ``N + 1`` tokens (MAE: ``B`` of ``N/4 + 1``) and
``B`` decoder sequences of ``N + 1`` (both), plus top-k selection and the
contrastive matmul. This script counts the FLOPs of a forward+backward step
(``torch.utils.flop_counter``, with CPU attention counted:
``flop_counting.py``) and times interleaved steps of the two.

Example (CPU, ViT-B, batch 16)::

    python tools/benchmark_vs_mae.py --arch b --batch-size 16 --steps 5
"""
import argparse
import statistics
import time

import torch

import mixedae_mm  # noqa: F401
from flop_counting import flop_counter  # tools/, counts CPU attention
from mmpretrain.registry import MODELS


def build_pair(arch: str, img_size: int, patch_size: int, decoder_dim: int,
               decoder_depth: int, decoder_heads: int):
    backbone = dict(arch=arch, img_size=img_size, patch_size=patch_size)
    decoder = dict(
        decoder_embed_dim=decoder_dim,
        decoder_depth=decoder_depth,
        decoder_num_heads=decoder_heads)
    head = dict(norm_pix=True,
                loss=dict(type='PixelReconstructionLoss', criterion='L2'))
    mixedae = MODELS.build(
        dict(
            type='MixedAE',
            backbone=dict(type='MixedAEViT', **backbone),
            neck=dict(type='MixedAEPretrainDecoder', **decoder),
            head=dict(type='MixedAEPretrainHead', **head)))
    width = mixedae.backbone.embed_dims
    mae = MODELS.build(
        dict(
            type='MAE',
            backbone=dict(type='MAEViT', mask_ratio=0.75, **backbone),
            neck=dict(
                type='MAEPretrainDecoder',
                num_patches=mixedae.backbone.num_patches,
                patch_size=patch_size,
                embed_dim=width,
                **decoder),
            head=dict(type='MAEPretrainHead', patch_size=patch_size, **head)))
    return mixedae, mae


def step(model, images, device_sync):
    losses = model.loss(images, [])
    total = sum(v for k, v in losses.items() if k.startswith('loss'))
    total.backward()
    model.zero_grad(set_to_none=True)
    device_sync()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--arch', default='b')
    parser.add_argument('--img-size', type=int, default=224)
    parser.add_argument('--patch-size', type=int, default=16)
    parser.add_argument('--decoder', type=int, nargs=3, default=(512, 8, 16),
                        metavar=('DIM', 'DEPTH', 'HEADS'))
    parser.add_argument('--batch-size', type=int, default=16)
    parser.add_argument('--steps', type=int, default=5)
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available()
                        else 'cpu')
    parser.add_argument('--bf16', action='store_true',
                        help='autocast to bfloat16 (GPU)')
    args = parser.parse_args(argv)

    torch.manual_seed(0)
    models = dict(zip(('MixedAE', 'MAE'),
                      build_pair(args.arch, args.img_size, args.patch_size,
                                 *args.decoder)))
    device = torch.device(args.device)
    images = torch.randn(args.batch_size, 3, args.img_size, args.img_size,
                         device=device)
    sync = (torch.cuda.synchronize if device.type == 'cuda' else
            (lambda: None))
    autocast = torch.autocast(device.type, dtype=torch.bfloat16,
                              enabled=args.bf16)

    flops, times = {}, {name: [] for name in models}
    with autocast:
        for name, model in models.items():
            model.to(device).train()
            counter = flop_counter()
            with counter:
                step(model, images, sync)
            flops[name] = counter.get_total_flops()
            step(model, images, sync)  # warm-up
        for _ in range(args.steps):  # interleaved: same machine state
            for name, model in models.items():
                start = time.perf_counter()
                step(model, images, sync)
                times[name].append(time.perf_counter() - start)

    print(f'arch={args.arch} img={args.img_size} patch={args.patch_size} '
          f'batch={args.batch_size} device={device} bf16={args.bf16} '
          f'steps={args.steps}')
    print(f"{'model':<8} {'GFLOP/step':>11} {'ms/step (median)':>17}")
    for name in models:
        print(f'{name:<8} {flops[name] / 1e9:>11.1f} '
              f'{1000 * statistics.median(times[name]):>17.1f}')
    ratio_flops = flops['MixedAE'] / flops['MAE']
    ratio_time = statistics.median(times['MixedAE']) / statistics.median(
        times['MAE'])
    print(f'MixedAE / MAE: FLOPs x{ratio_flops:.3f}, time x{ratio_time:.3f}')
    return dict(flops=flops, times=times)


if __name__ == '__main__':
    main()
