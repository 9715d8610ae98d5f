"""A run told to stop (SIGTERM, SIGUSR1, Ctrl-C) saves the iteration it
stopped at and resumes from it to the uninterrupted run's weights.

The end-to-end runs train the shipped demo config through tools/train.py
(one process, and two under torchrun), wait until the log shows an
iteration, then send the signal; nothing depends on which iteration the
run then stops at.
"""
import os
import os.path as osp
import re
import signal
import subprocess
import sys
import time
from types import SimpleNamespace

import pytest
import torch

DEMO = 'configs/demo/mixedae_vit-tiny-p8_demo.py'
STOPPED = re.compile(r'(SIG\w+): stopped after iteration (\d+), saved (\S+);')
#: long enough never to end before the signal arrives
ENDLESS = 100000
#: a run that has not logged its second iteration by then has hung
STARTUP_LIMIT_S = 300


def _options(data_root, iters):
    return [
        f'train_dataloader.dataset.data_root={data_root}',
        'train_dataloader.batch_size=4', 'train_dataloader.num_workers=2',
        f'train_cfg.max_iters={iters}', 'default_hooks.logger.interval=1',
        # only the stop and the end of a run save
        f'default_hooks.checkpoint.interval={ENDLESS}',
        # ReconstructionVisualizationHook: no pictures in these runs
        f'custom_hooks.4.interval={ENDLESS}',
    ]


def _command(processes, work_dir, data_root, iters, *extra):
    train = ['tools/train.py', DEMO, '--work-dir', str(work_dir), *extra]
    if processes > 1:
        # --standalone: a free port of its own
        launch = [sys.executable, '-m', 'torch.distributed.run',
                  '--standalone', f'--nproc_per_node={processes}']
        train += ['--launcher', 'pytorch']
    else:
        launch = [sys.executable]
    return launch + train + ['--cfg-options'] + _options(data_root, iters)


def _env(repo_root):
    return dict(os.environ, PYTHONPATH=repo_root, OMP_NUM_THREADS='1',
                PYTHONUNBUFFERED='1')


def _train(repo_root, processes, work_dir, data_root, iters, *extra):
    result = subprocess.run(
        _command(processes, work_dir, data_root, iters, *extra),
        cwd=repo_root, env=_env(repo_root), capture_output=True, text=True,
        timeout=600)
    assert result.returncode == 0, (result.stdout[-3000:] +
                                    result.stderr[-3000:])
    return result.stdout + result.stderr


def _logged_iterations(text):
    return [int(i) for i in re.findall(r'Iter\(train\) \[\s*(\d+)/', text)]


def _start_and_wait_for_iteration(repo_root, processes, work_dir, data_root,
                                  iteration, log_path):
    """Start an endless run in its own session; return it once its log
    shows ``iteration``."""
    log = open(log_path, 'w')
    process = subprocess.Popen(
        _command(processes, work_dir, data_root, ENDLESS), cwd=repo_root,
        env=_env(repo_root), stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True)
    log.close()
    # a generous bound, so that a hung run fails this test instead of CI
    deadline = time.monotonic() + STARTUP_LIMIT_S
    while iteration not in _logged_iterations(open(log_path).read()):
        if process.poll() is not None:
            pytest.fail('the run ended before iteration '
                        f'{iteration}:\n{open(log_path).read()[-3000:]}')
        if time.monotonic() > deadline:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            pytest.fail(f'no iteration {iteration} within {STARTUP_LIMIT_S} '
                        f's:\n{open(log_path).read()[-3000:]}')
        time.sleep(0.1)  # polling the log
    return process


def _children(pid):
    """(pid, environment) of the processes whose parent is ``pid``."""
    found = []
    for entry in os.listdir('/proc'):
        if not entry.isdigit():
            continue
        try:
            with open(f'/proc/{entry}/stat') as f:
                # the name, in parentheses, may hold spaces
                parent = int(f.read().rsplit(')', 1)[1].split()[1])
            if parent != pid:
                continue
            with open(f'/proc/{entry}/environ', 'rb') as f:
                env = dict(item.split(b'=', 1) for item in
                           f.read().split(b'\0') if b'=' in item)
        except (OSError, IndexError, ValueError):
            continue  # ended meanwhile
        found.append((int(entry), env))
    return found


def _assert_same_weights(path_a, path_b):
    a = torch.load(path_a, map_location='cpu', weights_only=True)
    b = torch.load(path_b, map_location='cpu', weights_only=True)
    assert a['meta']['iter'] == b['meta']['iter']
    assert a['state_dict'].keys() == b['state_dict'].keys()
    for key, value in a['state_dict'].items():
        assert torch.equal(b['state_dict'][key], value), key
    for index, state in a['optimizer']['state'].items():
        for name in ('exp_avg', 'exp_avg_sq'):
            assert torch.equal(b['optimizer']['state'][index][name],
                               state[name]), (index, name)


def _stop_and_resume(repo_root, tmp_path, demo_data, processes, send):
    """Signal an endless run once it has logged iteration 2 (``send``
    does), then check the checkpoint it leaves and that ``--resume`` to
    two iterations later gives the weights of a run never stopped."""
    stopped_dir = tmp_path / 'stopped'
    log_path = tmp_path / 'stopped.log'
    process = _start_and_wait_for_iteration(
        repo_root, processes, stopped_dir, demo_data, 2, log_path)
    try:
        send(process)
        returncode = process.wait(timeout=300)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    log = open(log_path).read()
    stops = STOPPED.findall(log)
    assert len(stops) == 1, log[-3000:]
    name, iteration, path = stops[0]
    iteration = int(iteration)
    assert name == 'SIGTERM'
    # the checkpoint of the iteration it stopped at, named by last_checkpoint
    assert iteration >= 2 and max(_logged_iterations(log)) == iteration
    assert path == str(stopped_dir / f'iter_{iteration}.pth')
    assert (stopped_dir / 'last_checkpoint').read_text() == path
    saved = torch.load(path, map_location='cpu', weights_only=True)
    assert saved['meta']['iter'] == iteration

    end = iteration + 2
    resumed = _train(repo_root, processes, stopped_dir, demo_data, end,
                     '--resume')
    assert f'resumed epoch: 0, iter: {iteration}' in resumed
    uninterrupted = tmp_path / 'uninterrupted'
    _train(repo_root, processes, uninterrupted, demo_data, end)
    _assert_same_weights(uninterrupted / f'iter_{end}.pth',
                         stopped_dir / f'iter_{end}.pth')
    return returncode, log


@pytest.mark.slow
def test_sigterm_to_a_run_saves_its_iteration_and_resume_is_exact(
        repo_root, tmp_path, demo_data):
    """As Slurm and torchrun signal a job: the whole process group (the
    data-loading workers too, which must not die under the trainer)."""

    def send(process):
        os.killpg(process.pid, signal.SIGTERM)

    returncode, log = _stop_and_resume(repo_root, tmp_path, demo_data, 1,
                                       send)
    assert returncode == 128 + signal.SIGTERM
    assert 'Traceback' not in log


@pytest.mark.slow
def test_sigterm_to_one_of_two_ranks_stops_both_after_the_same_iteration(
        repo_root, tmp_path, demo_data):
    """torchrun, 2 processes: only rank 1 (and its loader workers) gets
    SIGTERM; rank 0 learns of it through the per-iteration all-reduce,
    both stop after the same iteration and rank 0 saves it."""

    def send(process):
        ranks = {env.get(b'RANK'): pid for pid, env in _children(process.pid)}
        assert set(ranks) == {b'0', b'1'}, ranks
        os.killpg(ranks[b'1'], signal.SIGTERM)

    returncode, log = _stop_and_resume(repo_root, tmp_path, demo_data, 2,
                                       send)
    assert returncode != 0  # torchrun: its workers did not finish


def _fake_run(loop, accumulate=1, iteration=0, epoch=0):
    from mmengine.optim import OptimWrapper
    model = torch.nn.Linear(2, 2)
    wrapper = OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.1),
                           accumulative_counts=accumulate)
    return SimpleNamespace(train_loop=loop, optim_wrapper=wrapper,
                           iter=iteration, epoch=epoch, hooks=[],
                           logger=SimpleNamespace(info=print, warning=print))


def test_stop_waits_for_the_end_of_a_gradient_accumulation_window():
    """With 4 micro-batches per update, a stop requested at iteration 1
    happens after iteration 4, whose update holds all four."""
    from mixedae_mm.engine import PreemptionHook, TrainingPreempted
    hook = PreemptionHook()
    hook._requested = signal.SIGTERM
    run = _fake_run(SimpleNamespace(max_iters=100), accumulate=4)
    for run.iter in range(3):  # iterations 1-3 done
        hook.after_train_iter(run, run.iter)
    run.iter = 3
    with pytest.raises(TrainingPreempted) as stop:
        hook.after_train_iter(run, run.iter)
    assert stop.value.code == 143 and stop.value.checkpoint is None


def test_stop_in_an_epochs_last_iteration_waits_for_the_epoch_to_end():
    """Its checkpoint must record the epoch as complete, which mmengine's
    epoch loop does after the iteration's hooks; a stop requested in the
    last iteration of the run lets it finish normally."""
    from mmengine.runner import EpochBasedTrainLoop

    from mixedae_mm.engine import PreemptionHook, TrainingPreempted
    loop = EpochBasedTrainLoop.__new__(EpochBasedTrainLoop)
    loop.dataloader, loop._max_iters = [None] * 3, 6
    hook = PreemptionHook()
    hook._requested = signal.SIGUSR1
    run = _fake_run(loop, iteration=2)  # the last of epoch 1
    hook.after_train_iter(run, 2)
    run.iter = 3
    with pytest.raises(TrainingPreempted) as stop:
        hook.after_train_epoch(run)
    assert stop.value.code == 128 + signal.SIGUSR1

    hook = PreemptionHook()
    hook._requested = signal.SIGTERM
    run = _fake_run(loop, iteration=5, epoch=1)
    hook.after_train_iter(run, 5)
    hook.after_train_epoch(run)  # the run's end: nothing raised


def test_unknown_signal_names_are_refused_with_the_setting_named():
    from mixedae_mm.engine import PreemptionHook
    with pytest.raises(ValueError, match=r"PreemptionHook signals=.*'SIGHUP'"):
        PreemptionHook(signals=['SIGTERM', 'SIGHUP'])


def test_every_recipe_and_the_demo_stop_with_a_checkpoint(repo_root):
    from mmengine.config import Config

    from builders import recipe_configs
    assert DEMO in recipe_configs()
    for path in recipe_configs():
        cfg = Config.fromfile(osp.join(repo_root, path))
        hooks = [h['type'] for h in cfg.custom_hooks]
        assert hooks.count('PreemptionHook') == 1, path


def _sbatch_script_from_docs(repo_root):
    text = open(osp.join(repo_root, 'docs/train.md')).read()
    script, = [block for block in re.findall(r'```bash\n(.*?)```', text, re.S)
               if '#SBATCH --signal=B:USR1@120' in block]
    return script


def test_the_documented_sbatch_script_passes_usr1_on_and_requeues(
        repo_root, tmp_path):
    """docs/train.md's Slurm script, run by bash with stand-ins for srun
    (started by the real tools/slurm_train.sh; it exits 138 on USR1, as
    train.py does after saving) and scontrol (records its arguments)."""
    bin_dir, ready, record, stopped = (
        tmp_path / n for n in ('bin', 'ready', 'log', 'stopped'))
    bin_dir.mkdir()
    (bin_dir / 'srun').write_text(
        f'#!{sys.executable}\n'
        'import os, pathlib, signal, sys\n'
        'def stop(*_):\n'
        f'    pathlib.Path({str(stopped)!r}).write_text("USR1")\n'
        '    sys.exit(138)\n'
        'signal.signal(signal.SIGUSR1, stop)\n'
        f'pathlib.Path({str(tmp_path / "pid")!r}).write_text(str(os.getpid()))\n'
        f'pathlib.Path({str(ready)!r}).write_text(" ".join(sys.argv[1:]))\n'
        'if os.environ.get("FINISH_AT_ONCE"):\n'
        '    sys.exit(0)\n'
        'while True:\n'
        '    signal.pause()\n')
    (bin_dir / 'scontrol').write_text(f'#!/bin/sh\necho "$@" >> {record}\n')
    for stub in ('srun', 'scontrol'):
        os.chmod(bin_dir / stub, 0o755)
    script = tmp_path / 'mixedae.sbatch'
    script.write_text(_sbatch_script_from_docs(repo_root))
    env = dict(os.environ, PATH=f'{bin_dir}{os.pathsep}{os.environ["PATH"]}',
               SLURM_JOB_ID='42', SLURM_JOB_PARTITION='gpu')

    # the time limit nears: Slurm sends USR1 to the batch script
    process = subprocess.Popen(['bash', str(script)], cwd=repo_root, env=env)
    try:
        while not ready.exists():
            assert process.poll() is None, 'the script ended early'
            time.sleep(0.1)  # polling for the stand-in, no timing asserted
        process.send_signal(signal.SIGUSR1)
        assert process.wait(timeout=60) == 138
    finally:
        if process.poll() is None:
            process.kill()
        try:  # a stand-in the signal missed would wait for ever
            os.kill(int((tmp_path / 'pid').read_text()), signal.SIGKILL)
        except (OSError, ValueError):
            pass
    assert stopped.exists(), 'USR1 did not reach srun'
    assert record.read_text().split() == ['requeue', '42']
    srun_args = ready.read_text()
    assert srun_args.startswith('-p gpu ') and srun_args.endswith('--resume')

    # a run that ends by itself is not requeued
    ready.unlink(), record.unlink()
    result = subprocess.run(['bash', str(script)], cwd=repo_root,
                            env=dict(env, FINISH_AT_ONCE='1'), timeout=60)
    assert result.returncode == 0 and ready.exists()
    assert not record.exists()


@pytest.fixture(scope='module')
def tiny_recipe_run(repo_root, tmp_path_factory):
    """configs/mixedae_vitb_1600e.py shrunk (``tiny_recipe_overrides``: 2
    iterations per epoch, 3 epochs, checkpoints per epoch, 2 persistent
    workers) and run to its end once: the uninterrupted run every stopped
    one below must end equal to. Returns its overrides and work dir."""
    from builders import (RECIPE, pretraining_imagenet,
                          tiny_recipe_overrides, train_recipe)
    root = tmp_path_factory.mktemp('tiny_recipe')
    overrides = tiny_recipe_overrides(
        pretraining_imagenet(str(root / 'imagenet'), size=72))
    full = root / 'full'
    result = train_recipe(repo_root, osp.join(repo_root, RECIPE), full,
                          overrides)
    assert result.returncode == 0, result.stderr[-3000:]
    return overrides, full


@pytest.mark.slow
@pytest.mark.parametrize('signalled_at, saved, resumed_at', [
    (2, 'iter_3.pth', 'resumed epoch: 1, iter: 3'),  # mid-epoch 2
    (3, 'epoch_2.pth', 'resumed epoch: 2, iter: 4'),  # epoch 2's last
])
def test_epoch_based_recipe_stopped_mid_epoch_or_at_its_end_resumes_exactly(
        repo_root, tmp_path, tiny_recipe_run, signalled_at, saved,
        resumed_at):
    """configs/mixedae_vitb_1600e.py shrunk (2 iterations per epoch, 3
    epochs, checkpoints per epoch, 2 persistent workers), sent SIGTERM by
    itself before a given iteration: mid-epoch it saves that iteration
    outside the epoch rotation, in an epoch's last iteration that epoch;
    either way --resume ends with the uninterrupted run's weights."""
    from mmengine.config import Config

    from builders import RECIPE, train_recipe
    base = osp.join(repo_root, RECIPE)
    shipped = Config.fromfile(base)
    signalled = tmp_path / 'signalled.py'
    signalled.write_text(
        f'_base_ = {base!r}\n'
        f'custom_imports = dict(imports={shipped.custom_imports.imports!r}'
        " + ['signal_hook'], allow_failed_imports=False)\n"
        f'custom_hooks = {[dict(h) for h in shipped.custom_hooks]!r} + '
        f"[dict(type='SignalAtIterHook', iteration={signalled_at})]\n")
    overrides, full = tiny_recipe_run
    part = tmp_path / 'part'
    result = train_recipe(repo_root, str(signalled), part, overrides)
    assert result.returncode == 128 + signal.SIGTERM, result.stderr[-3000:]
    name, iteration, path = STOPPED.findall(result.stdout + result.stderr)[0]
    assert (name, int(iteration)) == ('SIGTERM', signalled_at + 1)
    assert path == str(part / saved)
    assert (part / 'last_checkpoint').read_text() == path
    assert not (part / 'epoch_3.pth').exists()
    result = train_recipe(repo_root, base, part, overrides, '--resume')
    assert result.returncode == 0, result.stderr[-3000:]
    assert resumed_at in result.stdout + result.stderr
    _assert_same_weights(full / 'epoch_3.pth', part / 'epoch_3.pth')


@pytest.mark.slow
def test_killed_epoch_based_recipe_resumes_to_the_same_weights(
        repo_root, tmp_path, tiny_recipe_run):
    """configs/mixedae_vitb_1600e.py as shipped (epoch-based, persistent
    workers, checkpoint every epoch), shrunk: SIGKILL in epoch 3, resume
    from epoch_2.pth; the final weights equal an uninterrupted run's."""
    from mmengine.config import Config

    from builders import RECIPE, assert_same_training_state, train_recipe
    base = osp.join(repo_root, RECIPE)
    shipped = Config.fromfile(base)
    assert shipped.train_dataloader.persistent_workers is True
    assert shipped.train_cfg.type == 'EpochBasedTrainLoop'
    assert shipped.default_hooks.checkpoint.interval == 1
    hooks = [dict(h) for h in shipped.custom_hooks]
    killed_cfg = tmp_path / 'killed.py'
    killed_cfg.write_text(
        f'_base_ = {base!r}\n'
        f'custom_imports = dict(imports={shipped.custom_imports.imports!r}'
        " + ['kill_hook'], allow_failed_imports=False)\n"
        f'custom_hooks = {hooks!r} + '
        "[dict(type='KillAtIterHook', iteration=5)]\n")
    overrides, full = tiny_recipe_run
    part = tmp_path / 'part'
    result = train_recipe(repo_root, str(killed_cfg), part, overrides)
    assert result.returncode == -9, 'the run was not killed'
    assert (part / 'epoch_2.pth').exists()
    assert not (part / 'epoch_3.pth').exists()
    result = train_recipe(repo_root, base, part, overrides, '--resume')
    assert result.returncode == 0, result.stderr[-3000:]
    log = open(sorted(part.glob('*/*.log'))[-1]).read()
    assert 'resumed epoch: 2, iter: 4' in log
    assert_same_training_state(full / 'epoch_3.pth', part / 'epoch_3.pth')
