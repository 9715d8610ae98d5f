"""The small-scale study (configs/study/, tools/analysis_tools/
ablation_study.py, OnlineKNNHook) on a shrunk copy of the real
Fashion-MNIST that tools/setup_env.sh installs."""
import glob
import json
import os
import os.path as osp
import re
import signal
import subprocess
import sys
import threading
import time

import pytest
import torch

from mixedae_mm.datasets import (DEBIAN_FASHION_MNIST, FashionMNISTFiles,
                                 FashionMNISTMissingError, load_fashion_mnist)
from mixedae_mm.evaluation.pretraining import LOCK_FILE
from mixedae_mm.evaluation.study import ARMS, METRIC_TITLES
from builders import SHRUNK, finished_pretraining
from conftest import (IN_PROCESS_LOADING, assert_results_page_shows,
                      call_tool, load_tool, readme_sentences)

STUDY = 'tools/analysis_tools/ablation_study.py'
def test_the_packaged_data_set_is_installed():
    """README command 2 installs Debian's dataset-fashion-mnist; nothing in
    the suite skips for want of it."""
    images, labels = load_fashion_mnist(DEBIAN_FASHION_MNIST, 'train')
    assert images.shape == (60000, 28, 28) and images.dtype == torch.uint8
    assert labels.bincount().tolist() == [6000] * 10


def test_dataset_reads_both_forms(small_fashion_mnist):
    packaged = FashionMNISTFiles(test_mode=True, pipeline=[])
    small = FashionMNISTFiles(data_root=small_fashion_mnist, test_mode=True,
                              pipeline=[])
    assert len(packaged) == 10000 and len(small) == 100
    assert (packaged[7]['img'] == small[7]['img']).all()
    assert packaged[7]['gt_label'] == small[7]['gt_label']


def test_missing_data_set_is_one_line(tmp_path, capsys):
    with pytest.raises(FashionMNISTMissingError,
                       match='dataset-fashion-mnist.*--data-root'):
        FashionMNISTFiles(data_root=str(tmp_path), pipeline=[])
    result = call_tool('analysis_tools/ablation_study.py', '--data-root',
                       tmp_path, '--out', tmp_path / 'study', capsys=capsys)
    assert result.returncode == 1
    assert result.stderr.count('\n') == 1, result.stderr
    assert 'apt-get install dataset-fashion-mnist' in result.stderr
    assert '--data-root' in result.stderr


@pytest.mark.slow
def test_study_runs_every_arm_and_writes_every_column(
        small_fashion_mnist, repo_root, tmp_path, capsys):
    out = tmp_path / 'study'
    command = [sys.executable, STUDY, '--data-root', small_fashion_mnist,
               '--out', str(out), '--seeds', '0', '--finetune-epochs', '1',
               '--frozen-per-class', '10', '--finetune-per-class', '5',
               '--cfg-options', *SHRUNK]
    result = subprocess.run(command, cwd=repo_root, capture_output=True,
                            text=True, timeout=900)
    assert result.returncode == 0, (result.stdout[-3000:] +
                                    result.stderr[-3000:])
    results = {r['arm']: r for r in map(
        lambda p: json.load(open(p)),
        glob.glob(str(out / 'runs' / '*' / 'result.json')))}
    assert set(results) == set(ARMS)
    for arm, run in results.items():
        for metric in ('finetune_top1', 'linear_top1', 'knn_top1',
                       'knn_mean_top1'):
            assert 0 <= run[metric] <= 100, (arm, metric)
        assert run['test_images'] == 100 and run['finetune_images'] == 50
        assert run['train_images'] == 100
        if arm != 'scratch':
            assert run['pretrain_seconds'] > 0
            assert run['pretrain_peak_rss_mib'] > 100
            # the online kNN hook ran at the last iteration
            assert run['curves']['knn_top1'][0] == [2]
    # homologous accuracy exactly where there is homologous attention (the
    # scratch encoder is MixedAE's at its random initialisation: chance)
    for arm in ('mixedae', 'homo_attn_only', 'scratch'):
        layers = results[arm]['homo_acc_layers']
        assert len(layers) == 8 and all(0 <= v <= 1 for v in layers)
    for arm in ('mae', 'mae_mmpretrain', 'naive_mixing'):
        assert results[arm]['homo_acc_layers'] is None
    table = (out / 'results.md').read_text()
    for title in METRIC_TITLES.values():
        assert title in table
    table_rows = [l for l in table.splitlines() if l.startswith('|')]
    assert len(table_rows) == 2 + len(ARMS)
    # a MixedAE - MAE line for fine-tune, linear and both kNN; one seed a
    # side gives no interval, and the line says so
    differences = [l for l in table.splitlines() if 'mixedae − mae' in l]
    assert len(differences) == 4
    assert all('an interval needs 2 seeds a side' in l for l in differences)
    assert (out / 'results.png').stat().st_size > 10000

    # a second call finds every run done and only rewrites the report (the
    # tool's main, in-process: no new interpreter needed)
    again = call_tool('analysis_tools/ablation_study.py', *command[2:],
                      capsys=capsys)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.count('done already') == len(ARMS)


def test_a_checkpoint_of_another_arm_is_refused(repo_root, tmp_path):
    """Evaluation loads strictly: MAE's weights in the MixedAE study model
    (the encoder-side segment embedding differs) must fail, not evaluate
    whatever is left at random."""
    from mixedae_mm.evaluation.study import build_model, load_strictly
    mae, _ = build_model(osp.join(repo_root, ARMS['mae_mmpretrain']))
    path = tmp_path / 'mae.pth'
    torch.save(dict(state_dict=mae.state_dict()), path)
    mixedae, _ = build_model(osp.join(repo_root, ARMS['mixedae']))
    from mixedae_mm.checkpoint_io import CheckpointMismatchError
    with pytest.raises(CheckpointMismatchError, match='does not match'):
        load_strictly(mixedae, str(path))


def test_the_benchmark_knows_the_study_encoder_by_name(repo_root):
    """benchmark_vs_mae.py --arch study-tiny times the study's encoder."""
    from mmengine.config import Config

    from mixedae_mm.models import MixedAEViT
    cfg = Config.fromfile(osp.join(repo_root, ARMS['mixedae']))
    assert MixedAEViT.arch_zoo['study-tiny'] == cfg.study_arch


def test_too_few_images_per_class_names_the_flags():
    from mixedae_mm.evaluation.study import balanced_subset
    labels = torch.tensor([0, 0, 1, 1, 1])
    assert balanced_subset(labels, 2).tolist() in (
        [0, 1, 2, 3], [0, 1, 2, 4], [0, 1, 3, 4])
    with pytest.raises(ValueError, match='--frozen-per-class or '
                       '--finetune-per-class'):
        balanced_subset(labels, 3)


def test_readme_headline_is_the_committed_study_results(repo_root):
    """The README's study numbers are those of the committed runs
    (docs/results/runs/*/result.json), and docs/results/results.md is the
    table that ablation_study.py writes from them."""
    from statistics import fmean

    from mixedae_mm.evaluation.seed_stats import welch_interval
    from mixedae_mm.evaluation.study import markdown_table, read_results
    results_dir = osp.join(repo_root, 'docs', 'results')
    results = read_results(results_dir)
    with open(osp.join(results_dir, 'results.md')) as f:
        assert f.read() == markdown_table(results)

    def values(arm, metric='finetune_top1', seeds_below=None):
        return [r[metric] for r in results if r['arm'] == arm
                and (seeds_below is None or r['seed'] < seeds_below)]

    def mean(arm, metric='finetune_top1'):
        return f'{fmean(values(arm, metric)):.1f}'

    def spread(arm):
        return f'{min(values(arm)):.1f}-{max(values(arm)):.1f}'

    readme = readme_sentences()
    gain = fmean(values('mae')) - fmean(values('scratch'))
    finetune = welch_interval(values('mixedae'), values('mae'))
    first_three = welch_interval(values('mixedae', seeds_below=3),
                                 values('mae', seeds_below=3))
    mae_range = (min(values('mae')), max(values('mae')))
    assert mae_range[0] <= fmean(values('mae_mmpretrain')) <= mae_range[1]
    # the words follow the interval: "better" only when it excludes 0
    verdict = ('MixedAE fine-tunes better than MAE' if finetune['low'] > 0
               else 'This size cannot tell MixedAE from MAE on fine-tuning')
    for claim in [
            f'6 epochs, {len(results)} runs',
            f'by {gain:.1f} points ({mean("mae")} vs {mean("scratch")};',
            f'seed spread {max(values("mae")) - min(values("mae")):.1f} and '
            f'{max(values("scratch")) - min(values("scratch")):.1f})',
            f"inside our MAE's range ({mean('mae_mmpretrain')})",
            f'{verdict}, {mean("mixedae")} '
            f'({spread("mixedae")}, {len(values("mixedae"))} seeds) against '
            f'{mean("mae")} ({spread("mae")}, {len(values("mae"))} seeds): '
            f'{finetune["difference"]:+.2f}, '
            f'95% Welch interval {finetune["low"]:+.1f} to '
            f'{finetune["high"]:+.1f}',
            '(the first 3 seeds said '
            f'{first_three["difference"]:+.2f})',
            f'linear {mean("mixedae", "linear_top1")} vs '
            f'{mean("mae", "linear_top1")}',
            f'kNN {mean("mixedae", "knn_top1")} vs {mean("mae", "knn_top1")}',
            f'Naive mixing fine-tunes to {mean("naive_mixing")} '
            f'({len(values("naive_mixing"))} seeds)',
            'homologous attention without the contrastive loss to '
            f'{mean("homo_attn_only")} ({len(values("homo_attn_only"))} '
            'seeds)']:
        assert claim in readme, claim
    assert_results_page_shows(markdown_table(results))


# ------------------------------------------------ stopping and continuing
#: a training this long is still running when the test signals it
ENDLESS = 100000
#: a study that has not started training by then has hung
STARTUP_LIMIT_S = 300
STOPPED = re.compile(r'(SIG\w+): stopped after iteration (\d+), saved '
                     r'([^\s;]+)')


def _study_command(data_root, out, max_iters):
    """The study shrunk to one MixedAE run that logs every iteration."""
    return [sys.executable, STUDY, '--data-root', data_root, '--out',
            str(out), '--arms', 'mixedae', '--seeds', '0',
            '--finetune-epochs', '1', '--frozen-per-class', '10',
            '--finetune-per-class', '5', '--cfg-options',
            f'train_cfg.max_iters={max_iters}',
            'train_dataloader.batch_size=16',
            'default_hooks.logger.interval=1', *IN_PROCESS_LOADING]


def _training_processes(work_dir):
    """PIDs of the live tools/train.py processes training in ``work_dir``."""
    found = []
    for entry in os.listdir('/proc'):
        try:
            with open(f'/proc/{entry}/cmdline', 'rb') as f:
                words = f.read().decode(errors='replace').split('\0')
        except OSError:
            continue  # not a process, or it ended meanwhile
        if any(w.endswith('tools/train.py') for w in words) and \
                str(work_dir) in words:
            found.append(int(entry))
    return found


def _start_study_and_wait_for_training(command, repo_root, log_path,
                                       work_dir):
    """Start the study in a session of its own (as a terminal starts a
    job); return it once its training has logged an iteration."""
    with open(log_path, 'w') as log:
        study = subprocess.Popen(
            command, cwd=repo_root, stdout=log, stderr=subprocess.STDOUT,
            env=dict(os.environ, OMP_NUM_THREADS='1'),
            start_new_session=True)
    train_log = work_dir / 'train_stdout.log'
    deadline = time.monotonic() + STARTUP_LIMIT_S
    while not (train_log.exists() and
               'Iter(train) [' in train_log.read_text()):
        if study.poll() is not None or time.monotonic() > deadline:
            if study.poll() is None:
                _kill(study)
            pytest.fail('the study did not start training:\n' +
                        open(log_path).read()[-3000:])
        time.sleep(0.2)  # polling the log
    return study


def _kill(study):
    """Kill the study's process group (its training, in a session of its
    own, then gets SIGTERM from the kernel: PR_SET_PDEATHSIG)."""
    os.killpg(study.pid, signal.SIGKILL)
    study.wait()


def _wait(study, log_path):
    """The study's exit status, once it has ended."""
    try:
        return study.wait(timeout=300)
    except subprocess.TimeoutExpired:
        _kill(study)
        pytest.fail('the study did not stop:\n' +
                    open(log_path).read()[-3000:])


@pytest.mark.slow
def test_sigterm_stops_the_study_and_its_training_and_a_rerun_continues(
        small_fashion_mnist, repo_root, tmp_path, capsys):
    """A SIGTERM to the study reaches its training, which saves and stops;
    the study waits, says where it stopped, counts the attempt and exits
    143. A second study meanwhile is refused; the rerun continues from the
    checkpoint to a result whose curves have each step once."""
    out = tmp_path / 'study'
    work_dir = out / 'runs' / 'mixedae_seed0' / 'pretrain'
    log_path = tmp_path / 'study.log'
    study = _start_study_and_wait_for_training(
        _study_command(small_fashion_mnist, out, ENDLESS), repo_root,
        log_path, work_dir)
    try:
        assert len(_training_processes(work_dir)) == 1
        # the refusal: the tool's main, in-process
        second = call_tool(
            'analysis_tools/ablation_study.py',
            *_study_command(small_fashion_mnist, out, ENDLESS)[2:],
            capsys=capsys)
        assert second.returncode == 1
        assert 'Traceback' not in second.stderr, second.stderr[-3000:]
        assert second.stderr.strip().splitlines()[-1].startswith(
            f'error: {work_dir.parent} is in use by process {study.pid} (')
        assert len(_training_processes(work_dir)) == 1
    except BaseException:
        _kill(study)
        raise
    study.send_signal(signal.SIGTERM)
    returncode = _wait(study, log_path)
    log = open(log_path).read()
    assert returncode == 128 + signal.SIGTERM, log[-3000:]
    assert _training_processes(work_dir) == []
    (name, iteration, checkpoint), = STOPPED.findall(log)
    assert name == 'SIGTERM'
    assert (work_dir / 'last_checkpoint').read_text() == checkpoint
    assert 'run the study again to continue' in log
    timing = json.loads((work_dir / 'timing.json').read_text())
    assert timing['attempts'] == 1 and timing['seconds'] > 0
    assert not timing['done']

    end = int(iteration) + 2
    again = call_tool(  # the rerun: the tool's main, in-process
        'analysis_tools/ablation_study.py',
        *_study_command(small_fashion_mnist, out, end)[2:], capsys=capsys)
    assert again.returncode == 0, again.stderr[-3000:]
    assert 'continuing the stopped pretraining' in again.stdout
    result = json.loads((work_dir.parent / 'result.json').read_text())
    assert result['curves']['homo_acc'][0] == list(range(1, end + 1))
    assert result['curves']['knn_top1'][0] == [end]
    timing_after = json.loads((work_dir / 'timing.json').read_text())
    assert timing_after['attempts'] == 2 and timing_after['done']
    assert result['pretrain_seconds'] >= round(timing['seconds'], 1)
    # released: no lock file left in the run folders
    assert not (work_dir / LOCK_FILE).exists()
    assert not (work_dir.parent / LOCK_FILE).exists()


@pytest.mark.slow
def test_ctrl_c_to_the_study_stops_its_training_once_with_a_checkpoint(
        small_fashion_mnist, repo_root, tmp_path):
    """A terminal's Ctrl-C signals the whole foreground job: the training
    must get it once (twice stops it without a checkpoint)."""
    out = tmp_path / 'study'
    work_dir = out / 'runs' / 'mixedae_seed0' / 'pretrain'
    log_path = tmp_path / 'study.log'
    study = _start_study_and_wait_for_training(
        _study_command(small_fashion_mnist, out, ENDLESS), repo_root,
        log_path, work_dir)
    os.killpg(study.pid, signal.SIGINT)
    returncode = _wait(study, log_path)
    log = open(log_path).read()
    assert returncode == 128 + signal.SIGINT, log[-3000:]
    (name, iteration, checkpoint), = STOPPED.findall(log)
    assert name == 'SIGINT' and osp.isfile(checkpoint)
    assert _training_processes(work_dir) == []
    assert 'Traceback' not in log


@pytest.mark.slow
def test_a_study_killed_outright_stops_its_training_with_a_checkpoint(
        small_fashion_mnist, repo_root, tmp_path):
    """kill -9 (or the out-of-memory killer) gives the study no chance to
    pass a signal on: the kernel sends the training SIGTERM
    (PR_SET_PDEATHSIG), and the attempt is left for the next call to
    count."""
    out = tmp_path / 'study'
    work_dir = out / 'runs' / 'mixedae_seed0' / 'pretrain'
    log_path = tmp_path / 'study.log'
    study = _start_study_and_wait_for_training(
        _study_command(small_fashion_mnist, out, ENDLESS), repo_root,
        log_path, work_dir)
    study.kill()
    study.wait()
    deadline = time.monotonic() + 300
    while _training_processes(work_dir):
        assert time.monotonic() < deadline, 'the training did not stop'
        time.sleep(0.2)  # polling for its end
    (name, _, checkpoint), = STOPPED.findall(
        (work_dir / 'train_stdout.log').read_text())
    assert name == 'SIGTERM' and osp.isfile(checkpoint)
    timing = json.loads((work_dir / 'timing.json').read_text())
    assert timing['running']['pid'] == study.pid


def test_what_a_stopped_training_left_running_is_ended(tmp_path):
    """A training killed by a signal before its stop handler is in place
    (here: a child with the default SIGTERM action) can leave a process
    of its own behind, as a data loader worker it had just started; the
    study ends it, and the run folder is free again."""
    from mixedae_mm.evaluation.pretraining import (PretrainingStopped,
                                                   hold_run_folder,
                                                   run_training)
    marker = f'left-behind-{os.getpid()}'
    child = ('import subprocess, sys, time\n'
             'subprocess.Popen([sys.executable, "-c", '
             f'"import time; time.sleep(600)", {marker!r}])\n'
             'print("started", flush=True)\n'
             'time.sleep(600)\n')
    log_path = tmp_path / 'train_stdout.log'

    def stop_once_started():
        deadline = time.monotonic() + 60
        while 'started' not in (log_path.read_text()
                                if log_path.exists() else ''):
            if time.monotonic() > deadline:
                break
            time.sleep(0.05)  # polling the child's output
        os.kill(os.getpid(), signal.SIGTERM)

    def left_behind():
        return [pid for pid in os.listdir('/proc') if pid.isdigit()
                and marker in _cmdline(pid)]

    stopper = threading.Thread(target=stop_once_started)
    stopper.start()
    messages = []
    try:
        with pytest.raises(PretrainingStopped):
            run_training(str(tmp_path), lambda resume: [
                sys.executable, '-c', child], messages.append)
    finally:
        stopper.join()
        for pid in left_behind():  # the old behaviour: clean up after it
            os.kill(int(pid), signal.SIGKILL)
    assert any('left processes behind' in m for m in messages), messages
    deadline = time.monotonic() + 10
    while left_behind():  # SIGKILL is asynchronous
        assert time.monotonic() < deadline, 'a process was left running'
        time.sleep(0.05)
    with hold_run_folder(str(tmp_path)):
        pass  # nobody holds the folder's lock any more


def _cmdline(pid):
    try:
        with open(f'/proc/{pid}/cmdline', 'rb') as f:
            return f.read().decode(errors='replace')
    except OSError:
        return ''  # it ended meanwhile


@pytest.mark.slow
def test_a_run_folder_held_by_a_live_process_is_refused(tmp_path):
    from mixedae_mm.evaluation.pretraining import (RunFolderBusyError,
                                                   hold_run_folder)
    holder = subprocess.Popen(
        [sys.executable, '-c', 'import sys\n'
         'from mixedae_mm.evaluation.pretraining import hold_run_folder\n'
         f'with hold_run_folder({str(tmp_path)!r}):\n'
         '    print("held", flush=True)\n'
         '    sys.stdin.read()\n'],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == 'held\n'
        with pytest.raises(RunFolderBusyError,
                           match=f'is in use by process {holder.pid} '):
            with hold_run_folder(str(tmp_path)):
                pass
    finally:
        holder.kill()  # killed: its lock file stays behind
        holder.wait(timeout=60)
    stale = tmp_path / LOCK_FILE
    assert json.loads(stale.read_text())['pids'] == [holder.pid]
    with hold_run_folder(str(tmp_path)) as lock:
        assert lock.pids == [os.getpid()]
    assert not stale.exists()  # released: removed


def test_an_attempt_whose_study_was_killed_is_counted(tmp_path):
    """A study killed outright (SIGKILL) leaves ``running`` in timing.json;
    the next call counts that attempt up to its log's last write."""
    from mixedae_mm.evaluation.pretraining import _read_timing
    log_path = tmp_path / 'train_stdout.log'
    log_path.write_text('Iter(train) [1/100]\n')
    started = osp.getmtime(log_path) - 30
    (tmp_path / 'timing.json').write_text(json.dumps(dict(
        seconds=5., peak_rss_mib=100., attempts=1, done=False,
        running=dict(started=started, pid=1))))
    messages = []
    timing = _read_timing(str(tmp_path / 'timing.json'), str(log_path),
                          messages.append)
    assert timing['attempts'] == 2 and 'running' not in timing
    assert timing['seconds'] == pytest.approx(35.)
    assert len(messages) == 1 and 'counted an attempt' in messages[0]


def test_curves_of_a_resumed_run_have_each_step_once(tmp_path):
    """An attempt killed without a checkpoint logged steps that its
    successor, resumed from an older checkpoint, logs again: the later
    points are kept."""
    from mixedae_mm.evaluation.study import read_curves
    paths = []
    # the value tells the attempt: the step, plus 100 in the second
    for name, steps, offset in (('first', [1, 2, 3, 4], 0),
                                ('second', [3, 4, 5], 100)):
        path = tmp_path / f'{name}.json'
        path.write_text(''.join(json.dumps(dict(step=s, homo_acc=s + offset))
                                + '\n' for s in steps))
        paths.append(str(path))
    steps, values = read_curves(paths)['homo_acc']
    assert steps == [1, 2, 3, 4, 5]
    assert values == [1, 2, 103, 104, 105]


# ------------------------------------------------------- one-line errors
def test_a_negative_seed_is_refused_when_the_arguments_are_read(capsys):
    """Before, --seeds -1 failed inside the pretraining, again on every
    rerun."""
    study = load_tool('analysis_tools/ablation_study.py')
    with pytest.raises(SystemExit) as stop:
        study.parse_args(['--out', 'study', '--seeds', '0', '-1'])
    assert stop.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].endswith(
        'error: argument --seeds: must be an integer >= 0, got -1')


def _study_args(data_root, out, **changes):
    study = load_tool('analysis_tools/ablation_study.py')
    args = study.parse_args(['--data-root', data_root, '--out', str(out)])
    vars(args).update(changes)
    return study, args


def test_too_few_images_per_class_is_one_line(small_fashion_mnist,
                                              tmp_path):
    study, args = _study_args(small_fashion_mnist, tmp_path)
    with pytest.raises(SystemExit) as stop:
        study.load_data(args, print)
    assert re.fullmatch(
        r'ablation_study.py: error: class \d+ has \d+ images, fewer than the '
        r'1000 per class asked for: lower --frozen-per-class or '
        r'--finetune-per-class', stop.value.code)


def test_a_truncated_gz_file_is_named(small_fashion_mnist, tmp_path):
    """gzip's EOFError named no file."""
    import gzip
    import shutil

    from mixedae_mm.datasets.fashion_mnist import FashionMNISTDamagedError
    root = tmp_path / 'fashion-mnist'
    shutil.copytree(small_fashion_mnist, root)
    images = root / 'train-images-idx3-ubyte'
    packed = gzip.compress(images.read_bytes())
    damaged = root / 'train-images-idx3-ubyte.gz'
    damaged.write_bytes(packed[:len(packed) // 2])
    images.unlink()
    with pytest.raises(FashionMNISTDamagedError) as refused:
        load_fashion_mnist(str(root), 'train')
    assert str(refused.value).startswith(
        f'{damaged} is damaged, its gzip stream is cut short or corrupt')
    study, args = _study_args(str(root), tmp_path / 'study')
    with pytest.raises(SystemExit) as stop:
        study.load_data(args, print)
    assert stop.value.code == f'ablation_study.py: error: {refused.value}'


def test_a_checkpoint_of_another_arm_in_a_run_folder_is_one_line(
        small_fashion_mnist, repo_root, tmp_path):
    """Before: the right message at the end of a 553-line traceback."""
    from mixedae_mm.evaluation.study import build_model
    mae, _ = build_model(osp.join(repo_root, ARMS['mae_mmpretrain']))
    work_dir = tmp_path / 'runs' / 'mixedae_seed0' / 'pretrain'
    checkpoint = finished_pretraining(str(work_dir), mae.state_dict())
    study, args = _study_args(small_fashion_mnist, tmp_path)
    with pytest.raises(SystemExit) as stop:
        study.run_one('mixedae', 0, args, None, [], print)
    message = stop.value.code
    assert message.startswith(f'ablation_study.py: error: {checkpoint} '
                              'does not match MixedAE')
    assert message.endswith(f'delete {work_dir.parent} (or pass the same '
                            'options) and run again')
    assert '\n' not in message
