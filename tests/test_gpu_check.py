"""tools/gpu_check.sh (the GPU check) run end to end on the CPU at its tiny
size, its offline install of the carried wheels, and its settings."""
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
WHEELS = ROOT / 'gpu_wheels'

#: what docs/benchmark.md ("The GPU check") promises in gpu_check.json
BENCH_MODEL_FIELDS = {'step_median_s', 'images_per_s',
                      'cuda_peak_allocated_bytes', 'saved_for_backward_bytes',
                      'flops_per_step', 'mfu'}
TRAIN_FIELDS = {'status', 'batch_size', 'tries', 'data', 'epochs',
                'iterations_per_epoch', 'iterations', 'last_iter', 'losses',
                'iter_time_median_s', 'data_time_median_s',
                'iterations_per_s', 'images_per_s', 'peak_memory_bytes',
                'loss_first_mean', 'loss_last_mean', 'loss_rec_first_mean',
                'loss_rec_last_mean', 'loss_homo_first_mean',
                'loss_homo_last_mean', 'loss_fell'}
RESUME_FIELDS = TRAIN_FIELDS - {'tries', 'data', 'iterations_per_epoch'} | {
    'resumed_from_iter', 'resumed_where_training_stopped', 'returncode',
    'wall_s'}


@pytest.fixture(scope='module')
def gpu_check():
    from mixedae_mm.analysis import gpu_check
    return gpu_check


@pytest.fixture(scope='module')
def gpu_check_tool():
    from conftest import load_tool
    return load_tool('analysis_tools/gpu_check.py')


def run_script(tmp_path, **env):
    base = {k: v for k, v in os.environ.items()
            if not k.startswith('GPU_CHECK_')}
    base.update(OUT=str(tmp_path / 'out'), OMP_NUM_THREADS='1',
                GPU_CHECK_SITE=str(tmp_path / 'site'),
                GPU_CHECK_WORK=str(tmp_path / 'work'))
    base.update(env)
    return subprocess.run(['bash', 'tools/gpu_check.sh'], cwd=ROOT, env=base,
                          capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_gpu_check_runs_end_to_end_on_the_cpu_at_tiny_size(tmp_path):
    empty = tmp_path / 'no_wheels'
    empty.mkdir()
    result = run_script(
        tmp_path, GPU_CHECK_DEVICE='cpu', GPU_CHECK_TINY='1',
        GPU_CHECK_WHEELS=str(empty),  # use the packages already installed
        GPU_CHECK_PEAK_TFLOPS='1')
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr
    out = tmp_path / 'out'
    # only these come back from the device tool's $OUT
    assert sorted(os.listdir(out)) == ['gpu_check.json', 'gpu_check.log']
    report = json.loads((out / 'gpu_check.json').read_text())
    assert report['status'] == 'ok'
    assert report['install']['status'].startswith('skipped: no wheels')
    assert report['environment']['torch'] == torch.__version__
    for name in ('mmengine', 'mmcv', 'mmpretrain', 'mmseg', 'mmdet'):
        assert report['environment']['packages'][name]['version']

    assert list(report['benchmark']) == ['8']
    bench = report['benchmark']['8']
    assert bench['status'] == 'ok' and bench['peak_tflops'] == 1.0
    for name in ('MixedAE', 'MAE'):
        res = bench[name]
        assert set(res) == BENCH_MODEL_FIELDS
        assert res['step_median_s'] > 0 and res['flops_per_step'] > 0
        assert res['images_per_s'] == pytest.approx(8 / res['step_median_s'])
        assert res['mfu'] == pytest.approx(
            res['flops_per_step'] / res['step_median_s'] / 1e12)
        assert res['cuda_peak_allocated_bytes'] is None  # CPU
    assert {'step_median_s', 'step_paired_median', 'flops_per_step',
            'saved_for_backward_bytes'} <= set(
                bench['ratio_mixedae_over_mae'])

    train, resume = report['train'], report['resume']
    assert TRAIN_FIELDS <= set(train)
    assert train['status'] == 'ok' and train['batch_size'] == 8
    assert [t['status'] for t in train['tries']] == ['ok']
    assert train['iterations'] == train['last_iter'] == 4
    assert len(train['losses']) == 4
    assert all(math.isfinite(loss) for loss in train['losses'])
    assert train['images_per_s'] == pytest.approx(
        8 * train['iterations_per_s'])
    assert train['peak_memory_bytes'] is None  # mmengine logs it on CUDA
    assert RESUME_FIELDS <= set(resume)
    assert resume['status'] == 'ok'
    assert resume['resumed_from_iter'] == 4
    assert resume['resumed_where_training_stopped'] is True
    assert resume['iterations'] == 2 and resume['last_iter'] == 6

    log = (out / 'gpu_check.log').read_text()
    assert '[gpu_check] install: skipped' in log
    assert 'Epoch(train) [3][2/2]' in log  # the resumed run's last step
    assert 'resumed epoch: 2, iter: 4' in log
    assert not (tmp_path / 'work' / 'train_b8' / 'epoch_1.pth').exists()
    assert (tmp_path / 'work' / 'train_b8' / 'epoch_3.pth').exists()


@pytest.mark.slow
@pytest.mark.skipif(not any(WHEELS.glob('*.whl')),
                    reason='no gpu_wheels/: run '
                    'tools/gpu_check_fetch_wheels.sh')
@pytest.mark.skipif(torch.cuda.is_available(), reason='needs a machine '
                    'without a GPU (stops after the install)')
def test_gpu_check_installs_the_carried_wheels_ahead_of_the_system(tmp_path):
    """The install step puts the carried OpenMMLab packages first; mmcv is
    mmcv-lite (no compiled ops). On a machine without a GPU the check then
    stops with its one-line error, after writing what it found."""
    result = run_script(tmp_path, GPU_CHECK_DEVICE='cuda')
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        'gpu_check: error: GPU_CHECK_DEVICE=cuda but torch sees no CUDA GPU '
        'here; to run the check on the CPU set GPU_CHECK_DEVICE=cpu '
        'GPU_CHECK_TINY=1')
    report = json.loads((tmp_path / 'out' / 'gpu_check.json').read_text())
    assert report['status'] == 'error'
    assert report['install']['status'].startswith('installed ')
    site = str(tmp_path / 'site')
    assert report['install']['site'] == site
    for name in ('mmengine', 'mmcv', 'mmpretrain', 'mmseg', 'mmdet'):
        assert report['environment']['packages'][name]['path'].startswith(
            site + os.sep), name
    assert report['environment']['packages']['mmcv']['ops'] is False


def test_gpu_check_fallback_to_a_smaller_batch_after_out_of_memory(
        gpu_check, tmp_path, monkeypatch):
    """Training tries the batches largest first and keeps the first that
    does not run out of memory (faked here for batch 16)."""
    real_run = gpu_check.Steps.run
    calls = []

    def run(self, name, argv, timeout_s):
        calls.append(name)
        if name == 'train batch 16':
            return dict(status='out_of_memory', returncode=1,
                        error='torch.OutOfMemoryError: CUDA out of memory'), ''
        if 'batch 8' in name:  # the real thing is covered above; a stub
            return dict(status='ok', returncode=0, wall_s=1.0), \
                'resumed epoch: 1, iter: 4'
        return real_run(self, name, argv, timeout_s)

    monkeypatch.setattr(gpu_check.Steps, 'run', run)
    monkeypatch.setattr(gpu_check, 'read_scalars', lambda work_dir: [
        dict(iter=i + 1, loss=1.0 - 0.1 * i, time=0.5, data_time=0.1)
        for i in range(4)])
    settings = gpu_check.read_settings(
        dict(GPU_CHECK_TINY='1', GPU_CHECK_TRAIN_BATCHES='16 8'))
    steps = gpu_check.Steps(dict(), str(tmp_path / 'report.json'), 60)
    gpu_check.train_and_resume(settings, str(tmp_path), steps)
    train = steps.report['train']
    assert calls == ['train batch 16', 'train batch 8', 'resume batch 8']
    assert [t['status'] for t in train['tries']] == ['out_of_memory', 'ok']
    assert train['batch_size'] == 8
    # 32 images (two batches of 16): 4 iterations of 8 per epoch
    assert train['iterations_per_epoch'] == 4 and train['epochs'] == 1
    assert train['loss_fell'] is True
    assert steps.report['resume']['resumed_from_iter'] == 4
    assert json.loads((tmp_path / 'report.json').read_text()) == \
        steps.report


def test_gpu_check_stops_at_the_first_error_that_is_not_memory(
        gpu_check, tmp_path, monkeypatch):
    calls = []

    def run(self, name, argv, timeout_s):
        calls.append(name)
        return dict(status='failed', returncode=1, error='ValueError: x'), ''

    monkeypatch.setattr(gpu_check.Steps, 'run', run)
    settings = gpu_check.read_settings(
        dict(GPU_CHECK_TINY='1', GPU_CHECK_TRAIN_BATCHES='16 8'))
    steps = gpu_check.Steps(dict(), str(tmp_path / 'report.json'), 60)
    gpu_check.train_and_resume(settings, str(tmp_path), steps)
    assert calls == ['train batch 16']
    assert steps.report['train']['status'] == 'failed'
    assert steps.report['resume']['status'] == 'skipped'


def test_gpu_check_step_records_timeout_and_budget(gpu_check, tmp_path):
    steps = gpu_check.Steps(dict(), str(tmp_path / 'r.json'), 600)
    record, _ = steps.run(
        'sleeper', [sys.executable, '-c', 'import time; time.sleep(60)'], 1)
    assert record['status'] == 'timeout' and record['returncode'] == 124
    spent = gpu_check.Steps(dict(), str(tmp_path / 'r.json'), 0)
    record, _ = spent.run('late', [sys.executable, '-c', 'pass'], 100)
    assert record['status'] == 'skipped'
    assert 'GPU_CHECK_BUDGET' in record['error']


@pytest.mark.parametrize('returncode,output,full_time,status', [
    (0, '', False, 'ok'),
    (1, 'torch.OutOfMemoryError: CUDA out of memory. Tried', False,
     'out_of_memory'),
    (124, '', True, 'timeout'),
    (137, '', True, 'timeout'),  # timeout's KILL after its TERM
    (137, '', False, 'killed'),  # a KILL from elsewhere
    (1, 'ValueError: bad', False, 'failed'),
])
def test_gpu_check_step_status(gpu_check, returncode, output, full_time,
                               status):
    assert gpu_check.step_status(returncode, output, full_time) == status


def test_gpu_check_settings_defaults(gpu_check):
    gpu = gpu_check.read_settings({})
    assert gpu['device'] == 'cuda' and gpu['tiny'] is False
    assert gpu['bench_batches'] == [64, 256, 512]
    assert gpu['train_batches'][0] == 1024 and gpu['train_iters'] == 30
    assert gpu['budget_s'] < 600  # the device tool's limit per command
    tiny = gpu_check.read_settings(dict(GPU_CHECK_TINY='1',
                                        GPU_CHECK_DEVICE='cpu'))
    assert tiny['device'] == 'cpu' and tiny['bench_batches'] == [8]


@pytest.mark.parametrize('env,message', [
    (dict(GPU_CHECK_BENCH_BATCHES='64 6'),
     'GPU_CHECK_BENCH_BATCHES: 6 is not a multiple of 4'),
    (dict(GPU_CHECK_TRAIN_BATCHES='big'),
     "GPU_CHECK_TRAIN_BATCHES='big': give a positive whole number"),
    (dict(GPU_CHECK_TINY='yes'), "GPU_CHECK_TINY='yes': use 0 or 1"),
    (dict(GPU_CHECK_TRAIN_ITERS='0'),
     "GPU_CHECK_TRAIN_ITERS='0': give a positive whole number"),
    (dict(GPU_CHECK_PEAK_TFLOPS='fast'), "GPU_CHECK_PEAK_TFLOPS='fast'"),
    (dict(GPU_CHECK_PEAK_TFLOPS='-5'), "GPU_CHECK_PEAK_TFLOPS='-5'"),
    (dict(GPU_CHECK_DEVICE='gpu'),
     "GPU_CHECK_DEVICE='gpu': use cuda, cuda:N or cpu"),
])
def test_gpu_check_bad_setting_is_one_line_naming_it(gpu_check_tool, capsys,
                                                     env, message):
    assert gpu_check_tool.main(env) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert err.startswith('gpu_check: error: ' + message)


def test_gpu_check_runs_where_torch_does_not_import(tmp_path):
    """The command line loads the check (mixedae_mm.analysis.gpu_check)
    without importing mixedae_mm, so that a broken install is reported, not
    a traceback: a stand-in torch that fails to import changes nothing."""
    (tmp_path / 'torch').mkdir()
    (tmp_path / 'torch' / '__init__.py').write_text(
        'raise ImportError("broken torch")\n')
    env = {k: v for k, v in os.environ.items()
           if not k.startswith('GPU_CHECK_')}
    env.update(PYTHONPATH=os.pathsep.join([str(tmp_path), str(ROOT)]),
               GPU_CHECK_TINY='yes')
    result = subprocess.run(
        [sys.executable, 'tools/analysis_tools/gpu_check.py'], cwd=ROOT,
        env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip() == ("gpu_check: error: GPU_CHECK_TINY="
                                     "'yes': use 0 or 1")


def test_gpu_check_script_rejects_an_unknown_install_mode(tmp_path):
    result = run_script(tmp_path, GPU_CHECK_INSTALL='maybe')
    assert result.returncode == 2
    assert result.stderr.strip() == ('gpu_check.sh: error: '
                                     'GPU_CHECK_INSTALL=maybe: use auto, 1 '
                                     'or 0')
