"""A checkpoint hook after which there is always a checkpoint to resume.

mmengine's ``CheckpointHook`` with ``max_keep_ckpts`` deletes the oldest
checkpoint *before* writing the new one and then rewrites
``last_checkpoint`` in place: a run killed in between (preemption, out of
disk) is left with no complete checkpoint, and ``last_checkpoint`` naming a
deleted file. :class:`DurableCheckpointHook` orders it the other way:

1. write the new checkpoint (atomically, ``atomic_local`` by default),
2. point ``last_checkpoint`` at it (atomically),
3. only then delete the checkpoints that rotation drops.

The checkpoint written in step 1 still lists the files to drop in its
``keep_ckpt_ids``, so a run killed before step 3 deletes them on resume
(mmengine trims that list to ``max_keep_ckpts`` in ``before_train``). At
start-up it also deletes the temporary files of writes that were killed.

Under mmengine's ``FlexibleRunner`` the file itself is written by the
strategy (FSDP: on every rank), with a plain ``torch.save`` rather than the
``atomic_local`` backend; steps 2 and 3 keep their order, so a killed save
leaves a partial file that ``last_checkpoint`` does not name.

It saves weights-only loadable checkpoints itself (what
``WeightsOnlyCheckpointHook`` does), so a config needs this one hook.

A save that fails for want of space (``ENOSPC``) or a file-size limit
(``EFBIG``), or any other ``OSError``, raises :class:`CheckpointSaveError`:
one line naming the file that could not be written and the intact
checkpoint ``last_checkpoint`` still names, to resume from once there is
room.
"""
import os.path as osp
from collections import deque

from mmengine.dist import barrier, is_main_process
from mmengine.hooks import CheckpointHook
from mmpretrain.registry import HOOKS

from ..checkpoints import atomic_write, remove_stale_temps
from .checkpoint import (WeightsOnlyCheckpointHook,
                         checkpoint_from_weights_only,
                         checkpoint_to_weights_only)
from .fsdp import is_sharded


def _is_local(path) -> bool:
    return path is None or '://' not in str(path)


class CheckpointSaveError(RuntimeError):
    """A checkpoint (or the ``last_checkpoint`` pointer) could not be
    written; the message names it and the checkpoint to resume from."""


def _os_reason(err: OSError) -> str:
    if err.errno is None:
        return str(err)
    return f'{err.strerror or err} [Errno {err.errno}]'


def read_last_checkpoint(work_dir: str):
    """The checkpoint ``work_dir/last_checkpoint`` names, or None."""
    pointer = osp.join(work_dir, 'last_checkpoint')
    try:
        with open(pointer) as f:
            return f.read().strip() or None
    except OSError:
        return None


def checkpoint_save_failed(path, intact, err: OSError) -> str:
    """The one-line message of a checkpoint ``path`` that could not be
    written, with ``intact`` the checkpoint to resume from (None: none)."""
    fix = 'free disk space (or raise the file-size limit, ulimit -f)'
    if intact is None:
        return (f'could not write checkpoint {path}: {_os_reason(err)}; no '
                f'earlier checkpoint was saved: {fix} and start again')
    return (f'could not write checkpoint {path}: {_os_reason(err)}; the '
            f'last intact checkpoint is {intact}: {fix}, then resume with '
            '--resume')


@HOOKS.register_module()
class DurableCheckpointHook(CheckpointHook):
    """``CheckpointHook`` whose rotation never leaves nothing to resume, and
    whose checkpoints load with ``torch.load(weights_only=True)``.

    Same arguments as mmengine's ``CheckpointHook``; for a local ``out_dir``
    the default backend is ``atomic_local``.
    """

    def __init__(self, *args, backend_args=None, file_client_args=None,
                 **kwargs):
        if backend_args is None and file_client_args is None and _is_local(
                kwargs.get('out_dir')):
            backend_args = dict(backend='atomic_local')
        super().__init__(
            *args, backend_args=backend_args,
            file_client_args=file_client_args, **kwargs)

    def before_train(self, runner) -> None:
        super().before_train(runner)  # resolves out_dir
        if not is_main_process():
            return
        folders = {runner.work_dir}
        if _is_local(self.out_dir):
            folders.add(str(self.out_dir))
        for folder in sorted(folders):
            for path in remove_stale_temps(folder):
                runner.logger.info(
                    f'Removed {path}, left by a write that was killed')

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        checkpoint_to_weights_only(checkpoint)

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        checkpoint_from_weights_only(checkpoint)

    def _save_checkpoint_with_step(self, runner, step, meta):
        dropped = []
        # _save_checkpoint and _save_best_checkpoint may both save a step
        if self.max_keep_ckpts > 0 and not (self.keep_ckpt_ids and
                                            self.keep_ckpt_ids[-1] == step):
            ids = list(self.keep_ckpt_ids) + [step]
            dropped = ids[:-self.max_keep_ckpts]
            # saved with the dropped ids still listed: see the module doc
            runner.message_hub.update_info('keep_ckpt_ids', ids)
            self.keep_ckpt_ids = deque(ids[-self.max_keep_ckpts:],
                                       self.max_keep_ckpts)

        ckpt_filename = self.filename_tmpl.format(step)
        self.last_ckpt = self.file_backend.join_path(self.out_dir,
                                                     ckpt_filename)
        runner.message_hub.update_info('last_ckpt', self.last_ckpt)
        try:
            runner.save_checkpoint(
                self.out_dir,
                ckpt_filename,
                self.file_client_args,
                save_optimizer=self.save_optimizer,
                save_param_scheduler=self.save_param_scheduler,
                meta=meta,
                by_epoch=self.by_epoch,
                backend_args=self.backend_args,
                **self.args)
        except OSError as err:
            # the atomic write left no partial file and last_checkpoint
            # untouched: say which checkpoint is still there to resume from
            raise CheckpointSaveError(checkpoint_save_failed(
                self.last_ckpt, read_last_checkpoint(runner.work_dir),
                err)) from err
        if self.max_keep_ckpts > 0:
            runner.message_hub.update_info('keep_ckpt_ids',
                                           list(self.keep_ckpt_ids))
        if is_sharded(runner.model):
            # FSDP: every rank takes part in the save (gathering the full
            # state to rank 0); last_checkpoint names the new file only once
            # all have finished
            barrier()
        if not is_main_process():
            return

        pointer = osp.join(runner.work_dir, 'last_checkpoint')
        intact = read_last_checkpoint(runner.work_dir)
        try:
            atomic_write(pointer, str(self.last_ckpt).encode())
        except OSError as err:
            raise CheckpointSaveError(
                f'could not write {pointer}: {_os_reason(err)}; the '
                f'checkpoint {self.last_ckpt} is complete but {pointer} '
                f'still names {intact}: free disk space, then resume with '
                f'--resume {self.last_ckpt}') from err
        for old_step in dropped:
            path = self.file_backend.join_path(
                self.out_dir, self.filename_tmpl.format(old_step))
            if self.file_backend.isfile(path):
                self.file_backend.remove(path)
            elif self.file_backend.isdir(path):
                # checkpoints saved by deepspeed are folders
                self.file_backend.rmtree(path)


def warn_if_checkpoints_not_loadable(runner) -> bool:
    """Warn when ``runner`` saves checkpoints that ``--resume`` and
    ``tools/test.py`` will refuse (mmengine's ``CheckpointHook`` without
    ``WeightsOnlyCheckpointHook``); returns whether it warned."""
    hooks = runner.hooks
    saves = any(isinstance(h, CheckpointHook) for h in hooks)
    converts = any(
        isinstance(h, (DurableCheckpointHook, WeightsOnlyCheckpointHook))
        for h in hooks)
    if not saves or converts:
        return False
    runner.logger.warning(
        'this config saves checkpoints with mmengine\'s CheckpointHook, '
        'whose message hub torch.load(weights_only=True) refuses: --resume '
        'and tools/test.py will not read them. Set default_hooks.checkpoint.'
        "type='DurableCheckpointHook' (also keeps a checkpoint to resume "
        "when a run is killed while saving), or add "
        "dict(type='WeightsOnlyCheckpointHook') to custom_hooks.")
    return True
