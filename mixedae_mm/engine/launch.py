"""Launcher helpers shared by ``tools/train.py``, ``tools/test.py`` and the
analysis tools."""
import contextlib
import gc
import traceback

import torch
import torch.distributed as dist


def _group_is_up() -> bool:
    return dist.is_available() and dist.is_initialized()


@contextlib.contextmanager
def process_group_torn_down_at_exit():
    """Destroy the default process group when the block ends, whoever
    created it (the tool, or mmengine's Runner, which never destroys it).

    A gloo or NCCL group left alive at interpreter exit still owns C++
    threads; their destructors run during shutdown and abort the process at
    random ("terminate called without an active exception", SIGABRT), and
    torchrun then kills the other ranks. On success the ranks first meet at a
    barrier, so none tears the group down while another still needs it. On an
    exception there is no barrier (the other ranks may never arrive); the
    group is destroyed and the exception propagates.

    ``destroy_process_group`` only unregisters the group: its C++ object and
    threads live on while anything else owns it, and a model wrapper does
    (DDP's reducer, FSDP's state). So the block must not keep a runner
    alive past its end (build and run it in a function whose frame ends
    inside the block), and before destroying, the runner's reference cycles
    are collected and a propagating exception's finished frames, which still
    hold it, are cleared. ``tests/test_process_groups.py`` checks that no
    gloo thread survives on any rank.
    """
    try:
        yield
    except BaseException as err:
        if _group_is_up():
            traceback.clear_frames(err.__traceback__)
            gc.collect()
            dist.destroy_process_group()
        raise
    if _group_is_up():
        gc.collect()
        dist.barrier()
        dist.destroy_process_group()


def uses_strategy(cfg) -> bool:
    """Whether ``cfg`` runs through mmengine's ``FlexibleRunner``, whose
    model wrapper is ``cfg.strategy.model_wrapper`` (not
    ``cfg.model_wrapper_cfg``)."""
    return cfg.get('runner_type') == 'FlexibleRunner'


def uses_fsdp(cfg) -> bool:
    """Whether ``cfg`` trains with mmengine's ``FSDPStrategy`` (or a
    subclass)."""
    from mmengine._strategy import FSDPStrategy
    from mmengine.registry import STRATEGIES
    strategy = cfg.get('strategy') or {}
    kind = strategy.get('type') if uses_strategy(cfg) else None
    if isinstance(kind, str):
        kind = STRATEGIES.get(kind)
    return isinstance(kind, type) and issubclass(kind, FSDPStrategy)


def repair_fsdp_strategy(cfg) -> None:
    """mmengine's own ``FSDPStrategy`` cannot resume with this torch; the
    config gets :class:`~mixedae_mm.engine.fsdp.MixedAEFSDPStrategy`, the
    same strategy with that repaired."""
    strategy = cfg.get('strategy') or {}
    if uses_strategy(cfg) and strategy.get('type') == 'FSDPStrategy':
        print("strategy FSDPStrategy -> MixedAEFSDPStrategy (mmengine's, "
              'with resuming repaired for torch >= 2.1)')
        strategy['type'] = 'MixedAEFSDPStrategy'


def build_runner(cfg):
    """The runner the config asks for, as mmpretrain's ``tools/train.py``
    picks it: ``MixedAERunner`` (mmengine's ``Runner`` with ``auto_scale_lr``
    counting gradient accumulation) unless ``runner_type`` names another
    (``'FlexibleRunner'`` for ``strategy=dict(type='FSDPStrategy', ...)``)."""
    if cfg.get('runner_type') is None:
        from .runner import MixedAERunner
        return MixedAERunner.from_cfg(cfg)
    from mmpretrain.registry import RUNNERS
    return RUNNERS.build(cfg)


def setup_distributed_without_gpu(cfg) -> None:
    """Let ``--launcher pytorch`` runs work on a machine without GPUs.

    NCCL needs GPUs, so the backend becomes gloo; and mmengine 0.10's
    pytorch launcher calls ``torch.cuda.set_device`` before creating the
    process group, which fails without a GPU, so the group is created here
    (mmengine then finds it initialised and uses it). mmengine gives the
    model wrapper the local rank as CUDA device: DDP on CPU modules takes
    no ``device_ids``, FSDP gets ``device_id='cpu'``.
    """
    if cfg.get('launcher', 'none') == 'none' or torch.cuda.is_available():
        return
    dist_cfg = cfg.setdefault('env_cfg', {}).setdefault('dist_cfg', {})
    if dist_cfg.get('backend', 'nccl') != 'gloo':
        print(f"no CUDA device: using the gloo backend instead of "
              f"{dist_cfg.get('backend', 'nccl')!r}")
        dist_cfg['backend'] = 'gloo'
    ddp = dict(type='MMDistributedDataParallel', broadcast_buffers=False)
    if uses_strategy(cfg):
        strategy = cfg.get('strategy') or dict(type='DDPStrategy')
        if uses_fsdp(cfg):
            wrapper = strategy.get('model_wrapper') or dict(
                type='MMFullyShardedDataParallel')
            wrapper['device_id'] = 'cpu'
        else:
            wrapper = strategy.get('model_wrapper') or ddp
            wrapper['device_ids'] = None
        strategy['model_wrapper'] = wrapper
        cfg.strategy = strategy
    else:
        wrapper = cfg.get('model_wrapper_cfg') or ddp
        wrapper['device_ids'] = None
        cfg.model_wrapper_cfg = wrapper
    if cfg.launcher == 'pytorch' and not dist.is_initialized():
        extra = {k: v for k, v in dist_cfg.items() if k != 'backend'}
        dist.init_process_group(backend='gloo', **extra)


def check_data_roots(cfg, loaders, tool: str) -> None:
    """Exit with one line naming a dataset folder of ``loaders`` (config
    keys such as ``'train_dataloader'``) that does not exist, and the
    setting to change; without it the data loader stops the run with a
    traceback. Wrapped datasets (``RepeatDataset``...) are looked into;
    remote roots and datasets without a ``data_root`` are left alone."""
    import os.path as osp
    for name in loaders:
        dataset, key = (cfg.get(name) or {}).get('dataset'), name + '.dataset'
        while isinstance(dataset, dict) and isinstance(
                dataset.get('dataset'), dict):
            dataset, key = dataset['dataset'], key + '.dataset'
        root = dataset.get('data_root') if isinstance(dataset, dict) else None
        if not root or '://' in str(root):
            continue
        prefix = dataset.get('data_prefix') or dataset.get('split') or ''
        if isinstance(prefix, dict):
            prefix = prefix.get('img_path') or prefix.get('img') or ''
        for folder in (root, osp.join(root, prefix) if prefix else None):
            if folder and not osp.isdir(folder):
                raise SystemExit(
                    f'{tool}: error: {folder} is not a folder ({name}): put '
                    f'the dataset there or pass --cfg-options '
                    f'{key}.data_root=PATH')
