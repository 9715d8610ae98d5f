"""Evaluate a checkpoint with an mmpretrain / mmsegmentation / mmdetection
config of mixedae_mm (the flags of mmpretrain's ``tools/test.py``).

``mixedae-test`` once the package is installed, ``python tools/test.py``
in a clone.
"""
import argparse
import os.path as osp

from mmengine.config import Config, DictAction
from mmengine.runner import Runner

from ..apis import load_checkpoint_for_use
from ..checkpoints import CheckpointError
from ..cli_args import config_file_or_recipe
from ..datasets import check_image_loading
from ..engine.launch import (check_data_roots,
                             process_group_torn_down_at_exit,
                             setup_distributed_without_gpu)
from . import parse_with_launcher, resolve_config


def parse_args(argv=None, prog=None):
    parser = argparse.ArgumentParser(
        prog=prog, description='Test (evaluate) a model')
    parser.add_argument(
        'config', type=config_file_or_recipe,
        help='test config file path, or the name of a recipe '
        '(its config shipped in the package)')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--work-dir', help='the dir to save logs and metrics')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override settings of the config, key=value')
    return parse_with_launcher(parser, argv)


def main(argv=None, prog=None):
    args = parse_args(argv, prog)
    cfg = Config.fromfile(resolve_config(args.config))
    cfg.launcher = args.launcher
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = osp.join('./work_dirs',
                                osp.splitext(osp.basename(args.config))[0])
    if cfg.get('test_dataloader') is None:
        raise SystemExit(f'{args.config} has no test_dataloader: it is a '
                         'pretraining config; evaluate with a transfer config')
    if '://' not in args.checkpoint and not osp.exists(args.checkpoint):
        raise SystemExit(f'test.py: error: {args.checkpoint}: no such '
                         'checkpoint file')
    check_data_roots(cfg, ['test_dataloader'], 'test.py')
    # loaded below, strictly: mmengine's load_from leaves what does not match
    # random and would evaluate that
    cfg.load_from = None
    check_image_loading(cfg)
    with process_group_torn_down_at_exit():
        setup_distributed_without_gpu(cfg)
        try:
            return _test(cfg, args.checkpoint)
        except CheckpointError as err:  # mismatched, truncated, shards, ...
            raise SystemExit(f'test.py: error: {err}') from None


def _test(cfg, checkpoint: str) -> dict:
    """Build the runner, load ``checkpoint`` strictly, return the metrics.
    The runner lives only in this frame: its model wrapper owns the process
    group, which must be released before it is destroyed."""
    runner = Runner.from_cfg(cfg)
    load_checkpoint_for_use(runner.model, checkpoint)
    return runner.test()


def console_main():
    """``mixedae-test``."""
    main(prog='mixedae-test')


if __name__ == '__main__':
    main()
