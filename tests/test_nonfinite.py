"""A diverging run stops before saving; resumes take the config's lr.

Every run goes through tools/train.py on the shipped demo config, shrunk by
``--cfg-options`` only (tiny batch, few iterations, a checkpoint every
iteration with the shipped ``max_keep_ckpts``).
"""
import glob
import os.path as osp
import re

import pytest
import torch
from conftest import IN_PROCESS_LOADING, load_tool

DEMO = 'configs/demo/mixedae_vit-tiny-p8_demo.py'
#: NonFiniteGuardHook's place in the shipped configs' custom_hooks
GUARD = 'custom_hooks.0'


def train(repo_root, work_dir, data_root, *options, iters=6, resume=None):
    """tools/train.py on the demo config; returns the runner, or the
    SystemExit message if the run stopped."""
    argv = [osp.join(repo_root, DEMO), '--work-dir', str(work_dir)]
    if resume:
        argv += ['--resume', resume]
    argv += [
        '--cfg-options', f'train_dataloader.dataset.data_root={data_root}',
        'train_dataloader.batch_size=8', *IN_PROCESS_LOADING,
        f'train_cfg.max_iters={iters}', 'default_hooks.checkpoint.interval=1',
        'default_hooks.logger.interval=1', *options
    ]
    try:
        return load_tool('train.py').main(argv)
    except SystemExit as stop:
        return str(stop.code)


def checkpoints(work_dir):
    return sorted(glob.glob(osp.join(str(work_dir), 'iter_*.pth')),
                  key=lambda p: int(re.findall(r'\d+', osp.basename(p))[0]))


def nonfinite_entries(path):
    from mixedae_mm.engine.nonfinite import nonfinite_tensors
    ckpt = torch.load(path, map_location='cpu', weights_only=True)
    return nonfinite_tensors(
        dict(state_dict=ckpt['state_dict'], optimizer=ckpt['optimizer']))


def assert_stopped_before_saving(message, work_dir):
    match = re.search(r'non-finite training values at iteration (\d+): '
                      r'(.+?)\. Stopped', message)
    assert match, message
    bad_iter = int(match.group(1))
    saved = checkpoints(work_dir)
    assert saved, 'no checkpoint was saved before the divergence'
    # the newest checkpoint is the iteration before, named in the message
    assert saved[-1].endswith(f'iter_{bad_iter - 1}.pth'), (saved, message)
    assert f'the last finite checkpoint is {saved[-1]}' in message
    for path in saved:  # weights and optimizer state, every file on disk
        assert nonfinite_entries(path) == [], path
    return bad_iter, match.group(2)


@pytest.mark.slow
def test_exploding_lr_stops_with_the_iteration_and_last_finite_checkpoint(
        repo_root, demo_data, tmp_path):
    message = train(repo_root, tmp_path, demo_data,
                    'optim_wrapper.optimizer.lr=1e6')
    assert isinstance(message, str), 'the diverged run did not stop'
    bad_iter, terms = assert_stopped_before_saving(message, tmp_path)
    # caught at the first NaN, in the loss or already in the gradients
    assert bad_iter > 1 and '=nan' in terms
    assert '--resume' in message


@pytest.mark.slow
def test_inf_loss_leaves_no_checkpoint_with_inf_optimizer_state(
        repo_root, demo_data, tmp_path):
    """A run resumed with a loss weight that overflows: loss_homo * 1e38 is
    inf while the weights stay finite, and the step would put inf into
    AdamW's exp_avg_sq (then into every later checkpoint, while rotation
    deletes the good ones)."""
    train(repo_root, tmp_path, demo_data, iters=2)
    message = train(repo_root, tmp_path, demo_data,
                    'model.head.homo_loss_weight=1e38', iters=4,
                    resume=osp.join(str(tmp_path), 'iter_2.pth'))
    assert isinstance(message, str), 'the inf run did not stop'
    bad_iter, terms = assert_stopped_before_saving(message, tmp_path)
    assert bad_iter == 3 and 'loss_homo=inf' in terms
    assert [osp.basename(p) for p in checkpoints(tmp_path)] == [
        'iter_1.pth', 'iter_2.pth']


@pytest.mark.slow
def test_skip_mode_trains_on_counts_and_stops_at_the_limit(
        repo_root, demo_data, tmp_path):
    from mixedae_mm.engine import NonFiniteGuardHook
    runner = train(repo_root, tmp_path / 'within', demo_data,
                   'model.head.homo_loss_weight=1e38',
                   f'{GUARD}.on_nonfinite=skip',
                   f'{GUARD}.max_skipped_steps=10', iters=3)
    assert not isinstance(runner, str), runner
    assert runner.message_hub.get_info('nonfinite_skipped_steps') == 3
    assert any(isinstance(h, NonFiniteGuardHook) for h in runner.hooks)
    # skipped steps touched neither weights nor optimizer state
    for path in checkpoints(tmp_path / 'within'):
        assert nonfinite_entries(path) == [], path
    ckpt = torch.load(checkpoints(tmp_path / 'within')[-1],
                      map_location='cpu', weights_only=True)
    assert ckpt['optimizer']['state'] == {}  # AdamW never stepped

    message = train(repo_root, tmp_path / 'limit', demo_data,
                    'model.head.homo_loss_weight=1e38',
                    f'{GUARD}.on_nonfinite=skip',
                    f'{GUARD}.max_skipped_steps=2', iters=5)
    assert isinstance(message, str), 'skip mode did not stop at its limit'
    assert '3 training steps skipped for non-finite values, more than ' \
           'max_skipped_steps=2 (the last at iteration 3' in message


@pytest.mark.slow
def test_resume_takes_the_lr_schedule_from_the_config(repo_root, demo_data,
                                                       tmp_path):
    """A run at a wrong lr, resumed with the right one, continues on the
    schedule of the right one, the same lr an uninterrupted run would
    have at that iteration."""
    lr = 1e-3
    train(repo_root, tmp_path / 'wrong', demo_data,
          f'optim_wrapper.optimizer.lr={lr * 1000}', iters=2)
    wrong = osp.join(str(tmp_path / 'wrong'), 'iter_2.pth')
    resumed = train(repo_root, tmp_path / 'resumed', demo_data,
                    f'optim_wrapper.optimizer.lr={lr}', iters=4,
                    resume=wrong)
    straight = train(repo_root, tmp_path / 'straight', demo_data,
                     f'optim_wrapper.optimizer.lr={lr}', iters=4)
    for runner in (resumed, straight):
        assert not isinstance(runner, str), runner
    got = [g['lr'] for g in resumed.optim_wrapper.optimizer.param_groups]
    want = [g['lr'] for g in straight.optim_wrapper.optimizer.param_groups]
    assert got == pytest.approx(want, rel=1e-9)
    assert max(got) < lr  # still in warm-up, well below the wrong lr
    initial = {g['initial_lr']
               for g in resumed.optim_wrapper.optimizer.param_groups}
    assert initial == {lr}
    for scheduler in resumed.param_schedulers:
        assert set(scheduler.base_values) == {lr}
