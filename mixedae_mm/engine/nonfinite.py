"""Stop (or skip the step) when training turns non-finite, before any save.

A NaN or inf loss does not stop mmengine: the run goes on, every later
checkpoint holds NaN weights (or an inf AdamW ``exp_avg_sq``), and checkpoint
rotation deletes the last good one. :class:`NonFiniteGuardHook` looks at
every iteration's loss terms and gradient norm after the step and before
:class:`~mmengine.hooks.CheckpointHook` (priority ``VERY_LOW``) can save or
rotate, so the newest checkpoint on disk is always a finite one.

The optimizer step has already run inside ``train_step`` when hooks see the
iteration, so the gradient norm is taken inside the optim wrapper's ``step``
(wrapped in ``before_train``). In ``'stop'`` mode that norm stays on the
device and is checked together with the losses in one host sync, which the
loss logging (``RuntimeInfoHook`` calls ``.item()``) makes free anyway. In
``'skip'`` mode the decision has to be taken before ``optimizer.step()``,
which costs one sync per step: weights and optimizer state are then left
untouched by a non-finite step.
"""
import functools
import math
import os.path as osp
from typing import Dict, List, Optional

import torch
from mmengine.device import get_device
from mmengine.dist import all_reduce
from mmengine.hooks import Hook
from mmengine.optim import OptimWrapper, OptimWrapperDict
from mmpretrain.registry import HOOKS

from .fsdp import is_sharded


class NonFiniteTrainingError(RuntimeError):
    """Training stopped because a loss, gradient or checkpoint tensor is
    NaN or inf."""


def total_grad_norm(optim_wrapper: OptimWrapper) -> Optional[torch.Tensor]:
    """The 2-norm of all gradients of ``optim_wrapper`` as a device scalar
    (no host sync), or None if no parameter has a gradient."""
    grads = [
        p.grad for group in optim_wrapper.optimizer.param_groups
        for p in group['params'] if p.grad is not None
    ]
    if not grads:
        return None
    return torch.nn.utils.get_total_norm(grads, foreach=None)


def sharded_grad_norm(optim_wrapper: OptimWrapper) -> torch.Tensor:
    """The 2-norm of the whole model's gradients when each rank holds a
    shard of them (FSDP), the same on every rank; a collective call."""
    local = total_grad_norm(optim_wrapper)
    if local is None:  # this rank's shard has no gradient
        local = torch.zeros((), device=get_device())
    squares = local.float().square()
    all_reduce(squares)  # in place; stays on its device (no host sync)
    return squares.sqrt()


def nonfinite_tensors(tree, prefix: str = '') -> List[str]:
    """Names (dotted paths) of the floating-point tensors in a nested
    dict/list that hold a NaN or inf."""
    found = []
    if isinstance(tree, torch.Tensor):
        if tree.is_floating_point() and not bool(torch.isfinite(tree).all()):
            found.append(prefix or '<tensor>')
    elif isinstance(tree, dict):
        for key, value in tree.items():
            found += nonfinite_tensors(value, f'{prefix}.{key}'.lstrip('.'))
    elif isinstance(tree, (list, tuple)):
        for i, value in enumerate(tree):
            found += nonfinite_tensors(value, f'{prefix}.{i}'.lstrip('.'))
    return found


def last_checkpoint(runner) -> Optional[str]:
    """The checkpoint CheckpointHook wrote last (its ``last_checkpoint``
    file is written only once the save has completed)."""
    path = osp.join(runner.work_dir, 'last_checkpoint')
    if osp.exists(path):
        with open(path) as f:
            return f.read().strip() or None
    return None


def _optim_wrappers(runner) -> List[OptimWrapper]:
    wrapper = runner.optim_wrapper
    if isinstance(wrapper, OptimWrapperDict):
        return list(wrapper.values())
    return [wrapper] if isinstance(wrapper, OptimWrapper) else []


def _uses_loss_scaler(optim_wrapper: OptimWrapper) -> bool:
    scaler = getattr(optim_wrapper, 'loss_scaler', None)
    return scaler is not None and getattr(scaler, 'is_enabled',
                                          lambda: True)()


@HOOKS.register_module()
class NonFiniteGuardHook(Hook):
    """Catch a NaN/inf loss term or gradient norm before anything is saved.

    Args:
        on_nonfinite (str): ``'stop'`` (default): raise
            :class:`NonFiniteTrainingError` naming the iteration, the
            non-finite terms and the last finite checkpoint; nothing is saved
            after that iteration. ``'skip'``: leave weights and optimizer
            state untouched for that step and train on.
        max_skipped_steps (int): In ``'skip'`` mode, stop as above once more
            than this many steps of the run have been skipped (the count is
            kept in the message hub, so it survives a resume).
        check_checkpoints (bool): Also refuse to save a checkpoint whose
            weights or optimizer state hold a NaN/inf (a last line of
            defence; costs one pass over the tensors per save).

    Under FSDP the gradient norm is that of all ranks' shards together and
    a checkpoint is refused on every rank when any shard holds a NaN/inf,
    so that all ranks stop (or skip) together.

    With fp16 dynamic loss scaling (``AmpOptimWrapper`` with a loss scaler)
    inf gradients are routine and the scaler already skips those steps, so
    only the loss terms are checked there.
    """
    priority = 'ABOVE_NORMAL'  # after RuntimeInfoHook, before CheckpointHook

    MODES = ('stop', 'skip')

    def __init__(self,
                 on_nonfinite: str = 'stop',
                 max_skipped_steps: int = 20,
                 check_checkpoints: bool = True) -> None:
        if on_nonfinite not in self.MODES:
            raise ValueError(f'on_nonfinite must be one of {self.MODES}, got '
                             f'{on_nonfinite!r}')
        if max_skipped_steps < 0:
            raise ValueError('max_skipped_steps must be >= 0, got '
                             f'{max_skipped_steps}')
        self.on_nonfinite = on_nonfinite
        self.max_skipped_steps = max_skipped_steps
        self.check_checkpoints = check_checkpoints
        self._grad_norms: List[torch.Tensor] = []  # this iteration's steps
        self._losses: List[torch.Tensor] = []  # 'skip' mode: since last step
        self._skipped_norms: List[float] = []  # this iteration, 'skip' mode
        self._sharded = False  # FSDP: parameters and gradients in shards

    # ------------------------------------------------------ optim wrapper
    def before_train(self, runner) -> None:
        self._sharded = is_sharded(runner.model)
        for wrapper in _optim_wrappers(runner):
            if not _uses_loss_scaler(wrapper):
                self._guard(wrapper)

    def _guard(self, wrapper: OptimWrapper) -> None:
        backward, step = wrapper.backward, wrapper.step
        skip = self.on_nonfinite == 'skip'
        grad_norm = sharded_grad_norm if self._sharded else total_grad_norm

        @functools.wraps(backward)
        def guarded_backward(loss: torch.Tensor, **kwargs) -> None:
            if skip:
                self._losses.append(loss.detach().reshape(()))
            backward(loss, **kwargs)

        # (wraps keeps the step counter mark of mmengine's schedulers)
        @functools.wraps(step)
        def guarded_step(**kwargs) -> None:
            norm = grad_norm(wrapper)
            if not skip:
                if norm is not None:
                    self._grad_norms.append(norm)
                step(**kwargs)
                return
            losses, self._losses = self._losses, []
            watched = losses + ([norm] if norm is not None else [])
            # the one host sync of 'skip' mode: the step depends on it
            if watched and not bool(torch.isfinite(torch.stack(
                    [t.float() for t in watched])).all()):
                self._skipped_norms.append(
                    float(norm) if norm is not None else math.nan)
                return  # update_params still zeroes the gradients
            step(**kwargs)

        wrapper.backward = guarded_backward
        wrapper.step = guarded_step

    # ------------------------------------------------------------ checks
    def after_train_iter(self, runner, batch_idx: int, data_batch=None,
                         outputs: Optional[dict] = None) -> None:
        norms, self._grad_norms = self._grad_norms, []
        skipped, self._skipped_norms = self._skipped_norms, []
        terms = {k: v for k, v in (outputs or {}).items()
                 if isinstance(v, (torch.Tensor, float, int))}
        if self.on_nonfinite == 'skip':
            if skipped or not self._all_finite(terms, []):
                self._count_skipped(runner, terms, skipped)
            return
        if not self._all_finite(terms, norms):
            raise self._stop(
                runner, f'non-finite training values at iteration '
                f'{runner.iter + 1}: {self._describe(terms, norms)}')

    @staticmethod
    def _all_finite(terms: Dict, norms: List[torch.Tensor]) -> bool:
        tensors = [v.detach().float().reshape(-1) for v in terms.values()
                   if isinstance(v, torch.Tensor)]
        tensors += [n.float().reshape(-1) for n in norms]
        numbers = [float(v) for v in terms.values()
                   if not isinstance(v, torch.Tensor)]
        if not all(math.isfinite(v) for v in numbers):
            return False
        if not tensors:
            return True
        device = tensors[0].device
        # one host sync for every value of the iteration
        return bool(torch.isfinite(torch.cat(
            [t.to(device) for t in tensors])).all())

    @staticmethod
    def _describe(terms: Dict, norms) -> str:
        values = {k: float(v.detach() if isinstance(v, torch.Tensor) else v)
                  for k, v in terms.items()}
        values.update({
            ('grad_norm' if len(norms) == 1 else f'grad_norm[{i}]'): float(n)
            for i, n in enumerate(norms)
        })
        bad = [f'{k}={v}' for k, v in values.items() if not math.isfinite(v)]
        return ', '.join(bad) or 'none'

    def _count_skipped(self, runner, terms: Dict,
                       skipped_norms: List[float]) -> None:
        count = runner.message_hub.get_info('nonfinite_skipped_steps', 0) + 1
        runner.message_hub.update_info('nonfinite_skipped_steps', count)
        what = self._describe(terms, [torch.tensor(n) for n in skipped_norms])
        if count > self.max_skipped_steps:
            raise self._stop(
                runner, f'{count} training steps skipped for non-finite '
                f'values, more than max_skipped_steps='
                f'{self.max_skipped_steps} (the last at iteration '
                f'{runner.iter + 1}: {what})')
        runner.logger.warning(
            f'NonFiniteGuardHook: iteration {runner.iter + 1}: step skipped '
            f'({what}); {count} of at most {self.max_skipped_steps} skipped')

    def _stop(self, runner, what: str) -> NonFiniteTrainingError:
        last = last_checkpoint(runner)
        if last:
            where = (f'the last finite checkpoint is {last}. Lower the lr '
                     '(optim_wrapper.optimizer.lr) or the loss weights and '
                     f'resume with --resume {last}')
        else:
            where = ('no checkpoint was saved in this run. Lower the lr '
                     '(optim_wrapper.optimizer.lr) or the loss weights and '
                     'start again')
        message = (f'{what}. Stopped before saving anything from this '
                   f'state; {where}, or skip such steps with '
                   "NonFiniteGuardHook(on_nonfinite='skip').")
        runner.logger.error(message)
        return NonFiniteTrainingError(message)

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        if not self.check_checkpoints:
            return
        bad = nonfinite_tensors(
            {k: checkpoint[k] for k in ('state_dict', 'optimizer')
             if k in checkpoint})
        if self._sharded:
            # every rank saves (its shard, or nothing beside rank 0): all
            # must refuse together
            refused = torch.tensor(float(len(bad)), device=get_device())
            all_reduce(refused)
            if refused.item() and not bad:
                bad = ['(on another rank)']
        if bad:
            shown = ', '.join(bad[:5]) + (', ...' if len(bad) > 5 else '')
            raise self._stop(
                runner, f'the checkpoint of iteration {runner.iter + 1} '
                f'holds non-finite tensors ({len(bad)}: {shown})')
