"""Resume with the config's lr schedule, not the checkpoint's.

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
