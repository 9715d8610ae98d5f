"""Launcher helpers shared by ``tools/train.py`` and ``tools/test.py``."""
import torch
import torch.distributed as dist


def setup_distributed_without_gpu(cfg) -> None:
    """Let ``--launcher pytorch`` runs work on a machine without GPUs.

    NCCL needs GPUs, so the backend becomes gloo; and mmengine 0.10's
    pytorch launcher calls ``torch.cuda.set_device`` before creating the
    process group, which fails without a GPU, so the group is created here
    (mmengine then finds it initialised and uses it). DDP on CPU modules
    takes no ``device_ids``, which mmengine would set to the local rank.
    """
    if cfg.get('launcher', 'none') == 'none' or torch.cuda.is_available():
        return
    dist_cfg = cfg.setdefault('env_cfg', {}).setdefault('dist_cfg', {})
    if dist_cfg.get('backend', 'nccl') != 'gloo':
        print(f"no CUDA device: using the gloo backend instead of "
              f"{dist_cfg.get('backend', 'nccl')!r}")
        dist_cfg['backend'] = 'gloo'
    wrapper = cfg.get('model_wrapper_cfg') or dict(
        type='MMDistributedDataParallel', broadcast_buffers=False)
    wrapper['device_ids'] = None
    cfg.model_wrapper_cfg = wrapper
    if cfg.launcher == 'pytorch' and not dist.is_initialized():
        extra = {k: v for k, v in dist_cfg.items() if k != 'backend'}
        dist.init_process_group(backend='gloo', **extra)
