"""mmengine's ``Runner`` with the lr scaled to the batch of an update."""
from typing import Dict, Optional

from mmengine.optim import OptimWrapper, OptimWrapperDict
from mmengine.registry import RUNNERS
from mmengine.runner import Runner


def accumulative_counts(optim_wrapper) -> int:
    """Micro-batches per optimizer update of a built optimizer wrapper (or
    of the ``optim_wrapper`` config dict)."""
    if isinstance(optim_wrapper, OptimWrapper):
        return optim_wrapper._accumulative_counts
    return (optim_wrapper or {}).get('accumulative_counts', 1)


@RUNNERS.register_module()
class MixedAERunner(Runner):
    """``Runner`` whose ``auto_scale_lr`` counts gradient accumulation.

    mmengine scales the lr by GPUs x per-GPU batch / ``base_batch_size``;
    with ``optim_wrapper.accumulative_counts = A`` an update averages the
    gradients of ``A`` such batches (the loss of each is divided by ``A``),
    so the batch the lr is for is ``A`` times larger. tools/train.py builds
    this runner unless the config names another ``runner_type``.
    """

    def scale_lr(self,
                 optim_wrapper: OptimWrapper,
                 auto_scale_lr: Optional[Dict] = None) -> None:
        super().scale_lr(optim_wrapper, auto_scale_lr)
        scale_lr_for_accumulation(optim_wrapper, auto_scale_lr, self.logger)


def scale_lr_for_accumulation(optim_wrapper, auto_scale_lr: Optional[Dict],
                              logger) -> None:
    """Multiply the lr mmengine scaled to GPUs x per-GPU batch by each
    wrapper's ``accumulative_counts``, so that it is scaled to the batch of
    an update. Shared by :class:`MixedAERunner` and
    ``MixedAEFSDPStrategy`` (FlexibleRunner scales in its strategy)."""
    if auto_scale_lr is None or not auto_scale_lr.get('enable', False):
        return
    wrappers = list(optim_wrapper.values()) if isinstance(
        optim_wrapper, OptimWrapperDict) else [optim_wrapper]
    for wrapper in wrappers:
        accumulate = accumulative_counts(wrapper)
        if accumulate == 1:
            continue
        for group in wrapper.optimizer.param_groups:
            group['lr'] = group['lr'] * accumulate
        logger.info(f'{accumulate} accumulated micro-batches per update: '
                    f'lr scaled by a further {accumulate}')
