"""Stop a training run with a checkpoint when the job is told to stop.

Slurm (``scancel``, the time limit, preemption), Kubernetes and torchrun end
a job with SIGTERM and follow with SIGKILL after a grace period (Slurm's
``KillWait``, Kubernetes' ``terminationGracePeriodSeconds``, torchrun's
``--shutdown-timeout``; 30 s by default); Slurm's ``--signal=USR1@T`` warns
``T`` seconds ahead. Python's default for SIGTERM is to die on the spot, so
everything since the last checkpoint is lost.

:class:`PreemptionHook` turns SIGTERM, SIGUSR1 and SIGINT (Ctrl-C) into a
request: the current iteration finishes, the config's checkpoint hook
writes a checkpoint of it (atomically with ``DurableCheckpointHook``), one
log line names the file, and the process exits with status 128 + the
signal's number (143 for SIGTERM, 138 for SIGUSR1, 130 for Ctrl-C), so
``--resume`` continues exactly where it stopped. A second Ctrl-C stops at
once, without a checkpoint.

Under torchrun / Slurm every rank all-reduces its request once per
iteration (one integer), so all ranks stop after the same iteration even
when only some were signalled. Data-loading workers ignore these signals:
Slurm and torchrun signal the whole process group, and a worker killed
under the trainer would end the run before it could save.
"""
import atexit
import multiprocessing
import os
import signal
import threading
import weakref
from contextlib import contextmanager

import torch
from mmengine.dist import all_reduce, barrier, is_distributed
from mmengine.hooks import CheckpointHook, Hook
from mmengine.optim import OptimWrapper
from mmengine.runner import BaseLoop, EpochBasedTrainLoop, IterBasedTrainLoop
from mmpretrain.registry import HOOKS

from .seeding import reopen_train_loader

#: what schedulers and terminals send to stop a job
STOP_SIGNALS = ('SIGTERM', 'SIGUSR1', 'SIGINT')


class TrainingPreempted(SystemExit):
    """Raised after the checkpoint of a stopped run is written; as a
    ``SystemExit`` it ends any launcher with status 128 + ``signum``,
    without a traceback."""

    def __init__(self, signum: int, checkpoint) -> None:
        super().__init__(128 + signum)
        self.signum = signum
        self.checkpoint = checkpoint


def stop_loader_workers(loop) -> None:
    """Shut the train loader's workers down now, as the loader itself does
    when its iterator is dropped. A stopped run keeps its loop, and with it
    the workers, alive until the interpreter exits, where multiprocessing
    would SIGTERM them and torch report each as killed."""
    iterators = (getattr(getattr(loop, 'dataloader', None), '_iterator',
                         None),  # persistent workers'
                 getattr(getattr(loop, 'dataloader_iterator', None),
                         '_iterator', None))  # iteration-based loop's
    for iterator in iterators:
        shutdown = getattr(iterator, '_shutdown_workers', None)
        if shutdown is not None:
            shutdown()


#: set at exit, read by the workers' SIGTERM handler (IgnoreStopSignals)
_exiting = None
#: train loops whose workers ignore the stop signals
_loops = weakref.WeakSet()


def _at_exit() -> None:
    # first: a worker that does not stop when asked is SIGTERMed by the
    # shutdown, and must then obey
    _exiting.value = 1
    for loop in list(_loops):
        stop_loader_workers(loop)


def trainer_exiting():
    """A flag shared with the data-loading workers, set when this process
    exits: workers left running then (a loader this module does not know)
    are SIGTERMed by multiprocessing, and must obey. The exit function is
    registered after multiprocessing's, so it runs before it."""
    global _exiting
    if _exiting is None:
        _exiting = multiprocessing.RawValue('b', 0)
        atexit.register(_at_exit)
    return _exiting


class IgnoreStopSignals:
    """A data loader's ``worker_init_fn`` that first makes the worker ignore
    the stop signals (the trainer decides when to stop and shuts its
    workers down), SIGTERM only until the trainer exits; picklable, for
    spawned workers."""

    def __init__(self, worker_init_fn, signals) -> None:
        self.worker_init_fn = worker_init_fn
        self.signals = tuple(signals)
        self.exiting = trainer_exiting()

    def __call__(self, worker_id: int) -> None:
        for name in self.signals:
            number = getattr(signal, name)
            signal.signal(
                number, self._on_sigterm
                if number == signal.SIGTERM else signal.SIG_IGN)
        if self.worker_init_fn is not None:
            self.worker_init_fn(worker_id)

    def _on_sigterm(self, signum, frame) -> None:
        if self.exiting.value:
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)


def ignore_stop_signals_in_workers(loader, signals) -> bool:
    """Make the workers ``loader`` starts from now on ignore ``signals``;
    returns whether it changed anything."""
    if getattr(loader, 'num_workers', 0) == 0 or isinstance(
            loader.worker_init_fn, IgnoreStopSignals):
        return False
    loader.worker_init_fn = IgnoreStopSignals(loader.worker_init_fn, signals)
    return True


def updates_at(runner, iterations_done: int) -> bool:
    """Whether the optimizer steps after ``iterations_done`` iterations:
    with gradient accumulation the gradients of a partial window are not
    in the checkpoint, so a stop waits for the window's last iteration."""
    wrapper = runner.optim_wrapper
    counts = wrapper._accumulative_counts if isinstance(
        wrapper, OptimWrapper) else 1
    return iterations_done % counts == 0


@contextmanager
def iteration_checkpoint(hook: CheckpointHook):
    """Let a hook that saves per epoch write one mid-epoch checkpoint, named
    by iteration and left out of its rotation (whose ids count epochs)."""
    saved = hook.filename_tmpl, hook.max_keep_ckpts
    hook.filename_tmpl, hook.max_keep_ckpts = 'iter_{}.pth', -1
    try:
        yield
    finally:
        hook.filename_tmpl, hook.max_keep_ckpts = saved


@HOOKS.register_module()
class PreemptionHook(Hook):
    """On SIGTERM / SIGUSR1 / Ctrl-C: finish the iteration, save, exit.

    See the module doc. ``signals``: the names of the signals to handle
    (default ``('SIGTERM', 'SIGUSR1', 'SIGINT')``; ones this platform lacks
    are skipped). The checkpoint goes through the config's checkpoint hook
    (``default_hooks.checkpoint``): its folder, backend and, for
    iteration-named checkpoints, its rotation. A run whose checkpoint hook
    saves per epoch and is stopped mid-epoch gets an ``iter_<N>.pth``
    outside the rotation (delete it once later checkpoints exist).
    """
    # after the checkpoint hook (VERY_LOW), so an iteration it has just
    # saved is not saved twice, and after the logger's line
    priority = 'LOWEST'

    def __init__(self, signals=STOP_SIGNALS) -> None:
        if isinstance(signals, str):
            signals = (signals, )
        unknown = [s for s in signals if s not in STOP_SIGNALS]
        if unknown:
            raise ValueError(
                f'PreemptionHook signals={list(signals)}: {unknown} not '
                f'handled; choose from {list(STOP_SIGNALS)}')
        self.signals = tuple(s for s in signals if hasattr(signal, s))
        self._requested = 0  # number of the first stop signal, 0: none
        self._agreed = 0  # the same on every rank
        self._stop_at_epoch_end = False
        self._previous_handlers = {}
        self._iterator_at_start = None

    # -- signals ---------------------------------------------------------
    def _on_signal(self, signum, frame) -> None:
        if signum == signal.SIGINT and self._requested == signal.SIGINT:
            raise KeyboardInterrupt  # Ctrl-C twice: stop now, no checkpoint
        if not self._requested:
            self._requested = signum

    def _install(self, runner) -> None:
        if threading.current_thread() is not threading.main_thread():
            runner.logger.warning(
                'PreemptionHook: training runs outside the main thread, '
                'where Python cannot handle signals; a SIGTERM will stop it '
                'without a checkpoint')
            return
        for name in self.signals:
            number = getattr(signal, name)
            previous = signal.signal(number, self._on_signal)
            # a run that ended in an exception left its handler installed:
            # restore what was there before it, not that
            while isinstance(getattr(previous, '__self__', None),
                             PreemptionHook):
                previous = previous.__self__._previous_handlers.get(
                    number, signal.SIG_DFL)
            self._previous_handlers[number] = previous

    def _uninstall(self) -> None:
        while self._previous_handlers:
            number, handler = self._previous_handlers.popitem()
            signal.signal(number, handler)

    # -- hooks -----------------------------------------------------------
    def before_run(self, runner) -> None:
        # a training run has built its loop (and an iteration-based loop has
        # started its loader's workers) before this; val/test runs have not
        loop = runner._train_loop
        if isinstance(loop, BaseLoop):
            ignore_stop_signals_in_workers(loop.dataloader, self.signals)
            self._iterator_at_start = getattr(loop, 'dataloader_iterator',
                                              None)

    def before_train(self, runner) -> None:
        loop = runner.train_loop
        ignore_stop_signals_in_workers(loop.dataloader, self.signals)
        _loops.add(loop)
        iterator = getattr(loop, 'dataloader_iterator', None)
        if (isinstance(loop, IterBasedTrainLoop) and iterator is not None
                and iterator is self._iterator_at_start
                and loop.dataloader.num_workers > 0):
            # its workers started before they were told to ignore the
            # signals; no other hook has restarted them (StepSeedHook does,
            # and its loader copies the wrapped worker_init_fn)
            reopen_train_loader(loop, loop.dataloader)
        self._iterator_at_start = None
        self._requested = self._agreed = 0
        self._stop_at_epoch_end = False
        self._install(runner)

    def after_train_iter(self, runner, batch_idx, data_batch=None,
                         outputs=None) -> None:
        signum = self._agree(runner)
        if not signum:
            return
        loop = runner.train_loop
        done = runner.iter + 1
        if done >= loop.max_iters or not updates_at(runner, done):
            return  # the run ends normally / the window is not complete
        if isinstance(loop, EpochBasedTrainLoop) and (
                done == (runner.epoch + 1) * len(loop.dataloader)):
            # the epoch's last iteration: its checkpoint must say the epoch
            # is complete, which mmengine's loop records after this hook
            self._stop_at_epoch_end = True
            return
        self._stop(runner, signum, done, runner.epoch, epoch_complete=False)

    def after_train_epoch(self, runner) -> None:
        if self._stop_at_epoch_end:
            # before validation: the grace period may be short
            self._stop(runner, self._agreed, runner.iter, runner.epoch + 1,
                       epoch_complete=True)

    def after_train(self, runner) -> None:
        self._uninstall()

    def after_run(self, runner) -> None:
        self._uninstall()

    # -- stopping --------------------------------------------------------
    def _agree(self, runner) -> int:
        """The stop signal every rank acts on (the largest requested), or 0;
        one all-reduce of one integer per iteration when distributed."""
        if self._agreed or not is_distributed():
            self._agreed = self._agreed or self._requested
            return self._agreed
        flag = torch.tensor([self._requested], dtype=torch.int64)
        all_reduce(flag, op='max')
        self._agreed = int(flag.item())
        return self._agreed

    def _stop(self, runner, signum, iterations_done, epochs_done,
              epoch_complete) -> None:
        name = signal.Signals(signum).name
        path = self._save(runner, iterations_done, epochs_done,
                          epoch_complete)
        if is_distributed():
            # nobody exits before the checkpoint is on disk: launchers tear
            # down the other ranks when the first one ends
            barrier()
        if path is None:
            runner.logger.warning(
                f'{name}: stopped after iteration {iterations_done} without a '
                'checkpoint (the config has no checkpoint hook in '
                'default_hooks)')
        else:
            runner.logger.info(
                f'{name}: stopped after iteration {iterations_done}, saved '
                f'{path}; continue with --resume')
        self._uninstall()
        stop_loader_workers(runner.train_loop)
        raise TrainingPreempted(signum, path)

    @staticmethod
    def _save(runner, iterations_done, epochs_done, epoch_complete):
        hooks = [h for h in runner.hooks if isinstance(h, CheckpointHook)]
        if not hooks:
            return None
        hook = hooks[0]
        meta = dict(epoch=epochs_done, iter=iterations_done)
        if hook.by_epoch and not epoch_complete:
            with iteration_checkpoint(hook):
                hook._save_checkpoint_with_step(runner, iterations_done, meta)
            return hook.last_ckpt
        step = epochs_done if hook.by_epoch else iterations_done
        path = hook.file_backend.join_path(hook.out_dir,
                                           hook.filename_tmpl.format(step))
        # unless the hook has just saved it, and with the epoch marked
        # complete (an iteration-saving hook marks it incomplete)
        if hook.last_ckpt != path or (epoch_complete and not hook.by_epoch):
            hook._save_checkpoint_with_step(runner, step, meta)
        return hook.last_ckpt
