"""Test helper: a hook that sends its own process a signal before a given
iteration, as a scheduler would mid-run, at a known point."""
import os
import signal

from mmengine.hooks import Hook
from mmpretrain.registry import HOOKS


@HOOKS.register_module()
class SignalAtIterHook(Hook):

    def __init__(self, iteration: int, signal_name: str = 'SIGTERM') -> None:
        self.iteration = iteration
        self.signum = getattr(signal, signal_name)

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        if runner.iter == self.iteration:
            os.kill(os.getpid(), self.signum)
