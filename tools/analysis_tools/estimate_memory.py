"""Estimate the GPU memory a pretraining config needs per GPU.

An estimate from counts, not a measurement:

- model states: fp32 master weights (every parameter), fp32 gradients and
  AdamW's two fp32 moments (trainable parameters): 4 + 4 + 8 bytes per
  trainable parameter. With FSDP (``--fsdp-world-size W``, full sharding)
  each GPU holds 1/W of them, plus the full weights of the one layer being
  computed (not counted; a few tens of MB for ViT-H);
- activations: the bytes autograd keeps for backward in one forward of the
  config's model (unique saved storages, parameters excluded, as
  ``benchmark_vs_mae.py`` measures them), measured on the CPU under bf16
  autocast at two small batches and extrapolated along the line through
  them to the per-GPU batch (activations grow linearly with the batch; the
  constant part is mostly autocast's bf16 copies of the weights).

Not counted: the CUDA context and kernels' workspaces (about 0.5-1 GiB),
allocator fragmentation, temporaries that live within one op, the input
batch. Leave 10-20% headroom; replace with a measured
``torch.cuda.max_memory_allocated`` (benchmark_vs_mae.py on a GPU) when one
is at hand.

Examples::

    python tools/analysis_tools/estimate_memory.py configs/mixedae_vitb_1600e.py
    python tools/analysis_tools/estimate_memory.py configs/mixedae_vith-p14_1600e.py \\
        --batch-size 128 --fsdp-world-size 32
"""
import argparse
import sys

if __name__ == '__main__':  # Ctrl-C during the imports below: one line
    sys.excepthook = lambda kind, *rest, hook=sys.excepthook: print(
        'estimate_memory.py: interrupted (Ctrl-C)', file=sys.stderr
    ) if issubclass(kind, KeyboardInterrupt) else hook(kind, *rest)

from mmengine.config import Config, DictAction

from mixedae_mm.analysis.memory import SampleBatchError, estimate
from mixedae_mm.cli import pretraining_config_refusal
from mixedae_mm.cli_args import existing_file, positive_int

GiB = 1024**3


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('config', type=existing_file)
    parser.add_argument('--batch-size', type=positive_int,
                        help='images per GPU (default: the config\'s '
                        'train_dataloader.batch_size)')
    parser.add_argument('--fsdp-world-size', type=positive_int, default=1,
                        help='GPUs the model states are sharded over (FSDP '
                        'full sharding); 1 = every GPU holds all (DDP)')
    parser.add_argument('--sample-batch', type=positive_int, default=4,
                        help='activations are measured at this batch and at '
                        'twice it (a multiple of the mixing group size)')
    parser.add_argument('--amp', choices=('bf16', 'none'), default='bf16',
                        help='autocast dtype of the measured forward')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction)
    return parser.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    # before the model is built and measured (a minute): the estimate
    # mixes batches and runs the pretraining loss
    refusal = pretraining_config_refusal(cfg, args.config)
    if refusal:
        raise SystemExit(f'estimate_memory.py: error: {refusal}')
    try:
        result = estimate(cfg, args.batch_size, args.fsdp_world_size,
                          args.sample_batch, args.amp)
    except SampleBatchError as err:
        raise SystemExit(f'estimate_memory.py: error: {err}') from None
    shard = '' if args.fsdp_world_size == 1 else \
        f', model states sharded over {args.fsdp_world_size} GPUs (FSDP)'
    print(f'{args.config}: ESTIMATE per GPU, batch {result["batch_size"]}'
          f'{shard}\n'
          f'  parameters       {result["parameters"] / 1e6:10.1f} M\n'
          f'  weights (fp32)   {result["weights_bytes"] / GiB:10.2f} GiB\n'
          f'  gradients (fp32) {result["gradients_bytes"] / GiB:10.2f} GiB\n'
          f'  AdamW moments    {result["optimizer_bytes"] / GiB:10.2f} GiB\n'
          f'  activations      {result["activation_bytes"] / GiB:10.2f} GiB'
          f' ({args.amp}, from batches {result["sample_batches"]})\n'
          f'  total            {result["total_bytes"] / GiB:10.2f} GiB '
          '+ CUDA context and fragmentation')
    return result


if __name__ == '__main__':
    main()
