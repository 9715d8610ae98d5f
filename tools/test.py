"""Evaluate a checkpoint with an mmpretrain / mmsegmentation / mmdetection
config of mixedae_mm (the flags of mmpretrain's ``tools/test.py``)."""
import argparse
import os
import os.path as osp
import sys

from mmengine.config import Config, DictAction
from mmengine.runner import Runner

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from mixedae_mm.apis import load_checkpoint_for_use  # noqa: E402
from mixedae_mm.checkpoint_io import CheckpointError  # noqa: E402
from mixedae_mm.cli_args import (existing_file,  # noqa: E402
                                 non_negative_int)
from mixedae_mm.datasets import check_image_loading  # noqa: E402
from mixedae_mm.engine.launch import (  # noqa: E402
    check_data_roots, process_group_torn_down_at_exit,
    setup_distributed_without_gpu)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Test (evaluate) a model')
    parser.add_argument('config', type=existing_file,
                        help='test config file path')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--work-dir', help='the dir to save logs and metrics')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override settings of the config, key=value')
    parser.add_argument(
        '--launcher',
        choices=['none', 'pytorch', 'slurm', 'mpi'],
        default='none',
        help='job launcher')
    parser.add_argument('--local_rank', '--local-rank',
                        type=non_negative_int, default=0)
    args = parser.parse_args(argv)
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


def main(argv=None):
    args = parse_args(argv)
    cfg = Config.fromfile(args.config)
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
        runner = Runner.from_cfg(cfg)
        try:
            load_checkpoint_for_use(runner.model, args.checkpoint)
            return runner.test()
        except CheckpointError as err:  # mismatched, truncated, shards, ...
            raise SystemExit(f'test.py: error: {err}') from None


if __name__ == '__main__':
    main()
