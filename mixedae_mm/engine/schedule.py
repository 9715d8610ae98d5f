"""The learning rate: reported for the real batch at start-up
(:class:`BatchLRReportHook`), and on resume taken from the config's
schedule, not the checkpoint's (:class:`ConfigScheduleHook`).

mmengine restores a resumed run's optimizer hyper-parameters (``lr``,
``initial_lr``, weight decay, betas) and its schedulers (``base_values``,
``eta_min``, ...) from the checkpoint, so a run that exploded at lr 1e6 and is
resumed with a lower ``optim_wrapper.optimizer.lr`` goes on at 1e6. With
:class:`ConfigScheduleHook` the checkpoint supplies only the position in the
schedule (the schedulers' step counters) and the optimizer's moments; every
hyper-parameter comes from the config as built for this run (including
``auto_scale_lr`` for the current batch size).
"""
import math

from mmengine.hooks import Hook
from mmengine.optim import OptimWrapper
from mmpretrain.registry import HOOKS

from .runner import accumulative_counts

#: what a scheduler's state keeps from the checkpoint: where it is
_SCHEDULER_POSITION = ('last_step', '_global_step')


@HOOKS.register_module()
class ConfigScheduleHook(Hook):
    """On resume, take hyper-parameters and schedules from the config.

    mmengine's schedulers are chained (each step scales the current value),
    so the current lr of a parameter group is rescaled by
    ``config initial_lr / checkpoint initial_lr``. That is exact for
    schedules proportional to the base value (linear warm-up, step decay,
    cosine to ``eta_min=0`` as in the pretraining recipes) and off by at most
    the absolute ``eta_min`` otherwise.
    """
    priority = 'VERY_HIGH'

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        wrapper = getattr(runner, 'optim_wrapper', None)
        saved = checkpoint.get('optimizer')
        if not isinstance(wrapper, OptimWrapper) or not isinstance(
                saved, dict) or 'param_groups' not in saved:
            return  # not a resume into a built optimizer (e.g. load_from)
        current = wrapper.optimizer.param_groups
        if len(saved['param_groups']) != len(current):
            return  # mmengine's own load reports the mismatch
        changed = set()
        for now, old in zip(current, saved['param_groups']):
            for key, value in now.items():
                if key == 'params' or key.startswith('initial_'):
                    continue
                initial = f'initial_{key}'
                if initial in now and initial in old:
                    value = _rescaled(old[key], old[initial], now[initial],
                                      fallback=value)
                    old[initial] = now[initial]
                if old.get(key) != value:
                    changed.add(key)
                old[key] = value
        schedulers = checkpoint.get('param_schedulers')
        if isinstance(schedulers, list) and isinstance(
                runner.param_schedulers, list) and len(schedulers) == len(
                    runner.param_schedulers):
            for i, (built, state) in enumerate(
                    zip(runner.param_schedulers, schedulers)):
                position = {k: state[k] for k in _SCHEDULER_POSITION
                            if k in state}
                fresh = built.state_dict()
                fresh.update(position)
                fresh['_last_value'] = [
                    group[fresh['param_name']]
                    for group in saved['param_groups']
                ]
                schedulers[i] = fresh
        if changed:
            runner.logger.info(
                'ConfigScheduleHook: resumed with the config\'s '
                f'{", ".join(sorted(changed))} (the checkpoint\'s differed); '
                f'lr now {[g["lr"] for g in saved["param_groups"]][:4]}')


def _rescaled(value, old_initial, new_initial, fallback):
    """``value * new_initial / old_initial``, or ``fallback`` (the config's
    value at the start of the schedule) where that is undefined."""
    if not all(isinstance(v, (int, float)) for v in (value, old_initial,
                                                      new_initial)):
        return fallback
    if old_initial == 0 or not math.isfinite(value / old_initial):
        return fallback
    return value * (new_initial / old_initial)


@HOOKS.register_module()
class BatchLRReportHook(Hook):
    """Print the real total batch and base learning rate when training
    starts, and warn when they differ from the recipe's.

    A recipe states its lr for the total batch ``auto_scale_lr.
    base_batch_size``. With ``auto_scale_lr.enable=True`` (the recipes'
    default) the lr is multiplied by real batch / base batch before
    training; the line printed here shows the result, whichever launcher
    started the run. The total batch is the batch of one optimizer update:
    GPUs (world size) x per-GPU batch x ``optim_wrapper.
    accumulative_counts``. mmengine's own scaling leaves the accumulation
    out (:class:`MixedAERunner`, which tools/train.py uses, counts it): an
    lr scaled without the accumulation is reported.
    """
    priority = 'LOW'

    def before_train(self, runner) -> None:
        # the config's value, as mmengine's auto_scale_lr reads it (the
        # built loader may batch through a batch_sampler, e.g. after
        # StepSeedHook's rebuild, and then has no batch_size)
        per_gpu = runner.cfg.train_dataloader.batch_size
        world = runner.world_size
        accumulate = accumulative_counts(runner.cfg.get('optim_wrapper'))
        per_step = world * per_gpu  # one forward/backward on every GPU
        total = per_step * accumulate
        base_lr = self.base_lr(runner)
        recipe_lr = runner.cfg.get('optim_wrapper', {}).get(
            'optimizer', {}).get('lr')
        # (from the config: mmengine's FlexibleRunner keeps no auto_scale_lr)
        scale_cfg = runner.cfg.get('auto_scale_lr') or {}
        recipe_batch = scale_cfg.get('base_batch_size')
        split = f'{world} GPU(s) x {per_gpu}' + (
            f' x {accumulate} accumulated' if accumulate != 1 else '')
        recipe_lr_text = 'unknown' if recipe_lr is None else \
            f'{recipe_lr:.4g}'
        runner.logger.info(
            f'total batch {total} ({split}), lr {base_lr:.4g}; recipe: batch '
            f'{recipe_batch}, lr {recipe_lr_text}')
        if recipe_batch is None:
            return
        scaling = scale_cfg.get('enable', False)
        if scaling and accumulate != 1 and recipe_lr is not None:
            # what mmengine's own Runner / strategies give: the lr of
            # GPUs x per-GPU batch, the accumulation left out
            uncounted = recipe_lr * per_step / recipe_batch
            if abs(base_lr - uncounted) <= 1e-6 * uncounted:
                runner.logger.warning(
                    f'lr {base_lr:.4g} is the recipe\'s {recipe_lr_text} '
                    f'scaled to {per_step} images, not to the '
                    f'total batch {total}: this runner '
                    f'({type(runner).__name__}) leaves accumulative_counts '
                    'out of auto_scale_lr. Train with tools/train.py '
                    '(MixedAERunner, or MixedAEFSDPStrategy under '
                    'FlexibleRunner), or '
                    f'multiply optim_wrapper.optimizer.lr by {accumulate}.')
        if total == recipe_batch:
            return
        if not scaling:
            runner.logger.warning(
                f'total batch {total} differs from the recipe\'s '
                f'{recipe_batch} and auto_scale_lr is disabled: the lr stays '
                f'{base_lr:.4g}, the recipe\'s value for batch {recipe_batch}'
                '. Enable it (auto_scale_lr.enable=True or --auto-scale-lr) '
                'to scale the lr linearly, or change the batch.')
        else:
            runner.logger.warning(
                f'total batch {total} differs from the recipe\'s '
                f'{recipe_batch}: lr scaled linearly to {base_lr:.4g} '
                f'(recipe: {recipe_lr_text} for {recipe_batch}); results may '
                'differ from the recipe\'s.')

    @staticmethod
    def base_lr(runner) -> float:
        """The largest lr of any parameter group before warm-up: the
        recipe's base lr after scaling (layer-wise decay only lowers the
        lr of earlier layers)."""
        groups = runner.optim_wrapper.optimizer.param_groups
        return max(g.get('initial_lr', g['lr']) for g in groups)
