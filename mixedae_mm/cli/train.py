"""Train with an mmpretrain / mmsegmentation / mmdetection config of
mixedae_mm (the same flags as mmpretrain's ``tools/train.py``).

``mixedae-train`` once the package is installed, ``python tools/train.py``
in a clone.
"""
import argparse
import os.path as osp
import sys

import torch.distributed as dist
from mmengine.config import Config, DictAction

from ..checkpoints import CheckpointError
from ..cli_args import config_file_or_recipe
from ..datasets import UnreadableImageError, check_image_loading
from ..engine import (CheckpointSaveError, NonFiniteTrainingError,
                      warn_if_checkpoints_not_loadable)
from ..engine.launch import (build_runner, check_data_roots,
                             process_group_torn_down_at_exit,
                             repair_fsdp_strategy,
                             setup_distributed_without_gpu, uses_fsdp)
from . import parse_with_launcher, resolve_config


def parse_args(argv=None, prog=None):
    parser = argparse.ArgumentParser(prog=prog, description='Train a model')
    parser.add_argument(
        'config', type=config_file_or_recipe,
        help='train config file path, or the name of a recipe '
        '(e.g. mixedae_vit-tiny-p8_demo: its config shipped in the package)')
    parser.add_argument('--work-dir', help='the dir to save logs and models')
    parser.add_argument(
        '--resume',
        nargs='?',
        type=str,
        const='auto',
        help='resume from the given checkpoint, or, with no value, from the '
        'latest checkpoint in the work dir (after a SIGTERM/SIGUSR1/Ctrl-C '
        'stop too: the run saved one)')
    parser.add_argument(
        '--amp',
        action='store_true',
        help='mixed precision (bf16 where the GPU supports it, else fp16 '
        'with dynamic loss scaling)')
    parser.add_argument(
        '--auto-scale-lr',
        action='store_true',
        help='scale the lr by total batch size / auto_scale_lr.base_batch_size '
        '(the shipped recipes do this by default: auto_scale_lr.enable=True)')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override settings of the config, key=value, e.g. '
        'train_cfg.max_iters=10')
    return parse_with_launcher(parser, argv)


def configure_amp(cfg: Config, amp_flag: bool) -> None:
    """Mixed precision: bf16 where the GPU supports it, else fp16 with a
    dynamic loss scale. A config that asks for AMP still runs on a CPU-only
    machine, in fp32 (to check a recipe before a cluster run); the ``--amp``
    flag there is an error. Under FSDP the precision is the strategy's
    ``model_wrapper.mixed_precision``: :func:`configure_fsdp_precision`."""
    import torch
    if uses_fsdp(cfg):
        configure_fsdp_precision(cfg, amp_flag)
        return
    wants_amp = amp_flag or cfg.optim_wrapper.get('type') == 'AmpOptimWrapper'
    if not wants_amp:
        return
    if not torch.cuda.is_available():
        run_fp32_without_gpu(cfg, amp_flag, 'AmpOptimWrapper')
        return
    if (not torch.cuda.is_bf16_supported()
            or cfg.optim_wrapper.get('dtype') == 'float16'):
        use_fp16_autocast(cfg)
    else:
        cfg.optim_wrapper.type = 'AmpOptimWrapper'
        cfg.optim_wrapper.setdefault('dtype', 'bfloat16')


def use_fp16_autocast(cfg: Config) -> None:
    """fp16 autocast with a dynamic loss scale (GPUs without bf16)."""
    cfg.optim_wrapper.type = 'AmpOptimWrapper'
    cfg.optim_wrapper.dtype = 'float16'
    cfg.optim_wrapper.setdefault('loss_scale', 'dynamic')


def run_fp32_without_gpu(cfg: Config, amp_flag: bool, what: str) -> None:
    """On a CPU-only machine a config asking for mixed precision runs in
    fp32 (to check a recipe before a cluster run); ``--amp`` is an error."""
    if amp_flag:
        raise SystemExit('--amp needs a CUDA GPU and this machine has '
                         'none: run without --amp (fp32 on CPU).')
    print(f'{what} needs a GPU: running this config in fp32 on the CPU')
    cfg.optim_wrapper.type = 'OptimWrapper'
    for key in ('dtype', 'loss_scale'):
        cfg.optim_wrapper.pop(key, None)


FSDP_BF16 = dict(
    param_dtype='bfloat16', reduce_dtype='bfloat16', buffer_dtype='bfloat16')


def configure_fsdp_precision(cfg: Config, amp_flag: bool) -> None:
    """FSDP casts parameters, gradient reductions and buffers itself
    (``strategy.model_wrapper.mixed_precision``), so no autocast optim
    wrapper is needed. As without FSDP: fp32 on a CPU-only machine (``--amp``
    is an error there), bf16 with ``--amp`` on a GPU, and on a GPU without
    bf16 the fp16 equivalent, with the sharded dynamic loss scaler of
    ``AmpOptimWrapper``."""
    import torch
    # ConfigDict.setdefault returns the plain dict it was given, not the
    # stored copy: take the stored one
    cfg.strategy.setdefault('model_wrapper', {})
    wrapper = cfg.strategy.model_wrapper
    wants = amp_flag or wrapper.get('mixed_precision') is not None or (
        cfg.optim_wrapper.get('type') == 'AmpOptimWrapper')
    if not wants:
        return
    if not torch.cuda.is_available():
        wrapper.pop('mixed_precision', None)
        run_fp32_without_gpu(cfg, amp_flag, 'FSDP mixed precision')
        return
    if wrapper.get('mixed_precision') is None:
        wrapper.mixed_precision = dict(FSDP_BF16)
    if not torch.cuda.is_bf16_supported():
        wrapper.mixed_precision = {
            k: ('float16' if v == 'bfloat16' else v)
            for k, v in wrapper.mixed_precision.items()}
        use_fp16_autocast(cfg)


def merge_args(cfg: Config, args) -> Config:
    cfg.launcher = args.launcher
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = osp.join('./work_dirs',
                                osp.splitext(osp.basename(args.config))[0])

    if args.resume == 'auto':
        cfg.resume = True
        cfg.load_from = None
    elif args.resume is not None:
        cfg.resume = True
        cfg.load_from = args.resume

    if args.auto_scale_lr:
        cfg.setdefault('auto_scale_lr', dict())
        cfg.auto_scale_lr.enable = True

    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)

    repair_fsdp_strategy(cfg)
    configure_amp(cfg, args.amp)
    check_image_loading(cfg)

    return cfg


def check_model_settings(cfg, prog: str) -> None:
    """Exit with one line for a model setting that would fail only after
    the runner's start-up (its log, then a traceback): an unknown ablation,
    a batch MixedAE cannot mix."""
    from ..models.selfsup.ablations import check_pretraining_config
    loader = cfg.get('train_dataloader') or {}
    try:
        check_pretraining_config(cfg.get('model') or {},
                                 loader.get('batch_size'))
    except ValueError as err:
        raise SystemExit(f'{prog}: error: {err}') from None


def _train(cfg):
    """Build the runner, train, return it."""
    runner = build_runner(cfg)
    warn_if_checkpoints_not_loadable(runner)
    runner.train()
    return runner


def main(argv=None, prog='train.py'):
    """Train; returns the runner of a single-process run, ``None`` under a
    launcher (there the runner's model wrapper owns the process group, so
    the runner is released before the group is destroyed). Stopped by
    SIGTERM, SIGUSR1 or Ctrl-C (``PreemptionHook``), it raises
    ``SystemExit(128 + signal number)`` after the checkpoint is saved."""
    try:
        args = parse_args(argv, prog)
        cfg = Config.fromfile(resolve_config(args.config))
        cfg = merge_args(cfg, args)
        check_model_settings(cfg, prog)
        check_data_roots(cfg, ['train_dataloader'] + (
            ['val_dataloader'] if cfg.get('val_cfg') else []), prog)
        with process_group_torn_down_at_exit():
            setup_distributed_without_gpu(cfg)
            runner = _train(cfg)
            if dist.is_initialized():
                runner = None
    except (NonFiniteTrainingError, UnreadableImageError,
            CheckpointSaveError, CheckpointError, FileNotFoundError) as err:
        # the message says what happened and what to change; a traceback
        # (for a worker's error, two) would only bury it. CheckpointError /
        # FileNotFoundError: --resume, load_from or an init_cfg naming a
        # file that is missing or is no checkpoint
        sys.exit(f'{prog}: error: {last_line(str(err))}')
    except KeyboardInterrupt:
        # a second Ctrl-C, or one before training started
        print(f'{prog}: interrupted (Ctrl-C) without saving a checkpoint; '
              '--resume continues from the last one', file=sys.stderr)
        sys.exit(130)
    return runner


def console_main():
    """``mixedae-train``."""
    main(prog='mixedae-train')


def last_line(message: str) -> str:
    """The error's own message: an exception re-raised from a data loader
    worker carries the worker's traceback before it."""
    lines = [line for line in message.splitlines() if line.strip()]
    if len(lines) > 1 and 'Traceback' in message:
        return lines[-1].split(': ', 1)[-1]
    return message


if __name__ == '__main__':
    main()
