"""One pretraining run as a child process of a study tool.

A study (``tools/analysis_tools/ablation_study.py``, and any other tool
that pretrains before it evaluates) starts ``tools/train.py`` per run, in
the run's work dir, and continues a stopped run from its last checkpoint
when called again. :func:`run_pretraining` does that so that nothing a
user does to the study loses or doubles work:

- A stop signal to the study (SIGTERM, SIGINT / Ctrl-C, SIGUSR1; SIGHUP is
  passed on as SIGTERM) is passed on to the training, whose
  ``PreemptionHook`` finishes the iteration, saves a checkpoint and exits;
  the study waits for it, logs where it stopped and raises
  :class:`PretrainingStopped` (a ``SystemExit`` with status 128 + the
  signal's number). The training runs in a session of its own, so a
  terminal's Ctrl-C reaches it once, through the study (twice would stop
  it without a checkpoint), and it gets SIGTERM if the study dies without
  passing a signal on (Linux: ``PR_SET_PDEATHSIG``).
- The work dir is locked (:func:`hold_run_folder`) for as long as the study
  or its training lives: a second study on the same folder is refused with
  :class:`RunFolderBusyError`, which names the processes that hold it.
- ``timing.json`` in the work dir counts every attempt: its seconds,
  the peak memory, and one whose study was killed outright (counted up to
  the last write to its ``train_stdout.log``).
"""
import contextlib
import fcntl
import json
import os
import os.path as osp
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import Callable, List, Optional, Sequence, Tuple

#: the clone's root (configs are given relative to it)
ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))

#: the lock file in a locked folder; it lists the holders' PIDs
LOCK_FILE = 'study.lock'

#: the signals a study passes on to its training, and as what:
#: PreemptionHook handles SIGTERM, SIGINT and SIGUSR1; a hang-up (closed
#: terminal) must stop the training as cleanly as a SIGTERM
FORWARDED = {'SIGTERM': 'SIGTERM', 'SIGINT': 'SIGINT', 'SIGUSR1': 'SIGUSR1',
             'SIGHUP': 'SIGTERM'}

#: the line PreemptionHook logs when it stops a run
STOP_LINE = re.compile(r'\b(SIG[A-Z0-9]+: stopped after iteration [^;]*)')

__all__ = [
    'run_pretraining', 'run_training', 'run_study', 'hook_data_root_options', 'hold_run_folder',
    'PretrainingStopped', 'PretrainingFailedError', 'RunFolderBusyError',
    'RunFolderMismatchError', 'LOCK_FILE'
]


class RunFolderBusyError(RuntimeError):
    """A run folder is held by another live process (a study, or the
    training a study started)."""


class RunFolderMismatchError(RuntimeError):
    """A run folder holds the work of another arm or of other options: it
    is not reported as this run (delete it, or pass the same options)."""


class PretrainingFailedError(RuntimeError):
    """The training exited with an error (not because it was told to
    stop)."""


class PretrainingStopped(SystemExit):
    """The study was told to stop while it pretrained; the training has
    stopped (with a checkpoint, unless told twice) and its time is in
    ``timing.json``. As a ``SystemExit`` it ends a tool with status
    128 + ``signum`` and no traceback."""

    def __init__(self, signum: int, stop_line: str) -> None:
        super().__init__(128 + signum)
        self.signum = signum
        self.stop_line = stop_line


# ---------------------------------------------------------------- the lock
def _alive(pid: int) -> bool:
    """Whether a process ``pid`` exists on this machine."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


def _describe(pid: int) -> str:
    """``pid`` with its command line where /proc tells it."""
    try:
        with open(f'/proc/{pid}/cmdline', 'rb') as f:
            words = f.read().split(b'\0')
    except OSError:
        return f'process {pid}'
    command = ' '.join(w.decode(errors='replace') for w in words if w)
    if len(command) > 120:
        command = command[:117] + '...'
    return f'process {pid} ({command})' if command else f'process {pid}'


def _holders_message(folder: str, path: str) -> str:
    try:
        with open(path) as f:
            holder = json.load(f)
    except (OSError, ValueError):
        holder = {}
    pids = [p for p in holder.get('pids', []) if isinstance(p, int)]
    host = holder.get('host')
    if host and host != socket.gethostname():
        who = f'process {", ".join(map(str, pids))} on {host}'
    else:
        alive = [p for p in pids if _alive(p)]
        who = ' and '.join(map(_describe, alive)) if alive else (
            'a live process (its lock is held; the PIDs in '
            f'{LOCK_FILE} have ended: {pids})')
    return (f'{folder} is in use by {who}: one study at a time per run '
            'folder; wait for it to end, or stop it (kill PID: it saves a '
            'checkpoint and exits), then run again')


class RunFolderLock:
    """An exclusive ``flock`` on ``FOLDER/study.lock``, whose text lists the
    holders' PIDs (for the message of a refused second study).

    ``flock`` locks the open file, not the process: a training started with
    the file open (``pass_fds``) keeps the folder locked after its study
    died, and a lock whose holders have all ended is free however it was
    left (a stale lock file is taken over without a check of its PIDs). The
    file is removed on release, unless a holder still runs.
    """

    def __init__(self, folder: str) -> None:
        self.folder = folder
        self.path = osp.join(folder, LOCK_FILE)
        self.pids: List[int] = []
        self.fd: Optional[int] = None

    def acquire(self) -> 'RunFolderLock':
        os.makedirs(self.folder, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise RunFolderBusyError(
                    _holders_message(self.folder, self.path)) from None
            try:
                current = os.stat(self.path).st_ino
            except FileNotFoundError:
                current = None
            if current == os.fstat(fd).st_ino:
                break
            # its holder removed the file between our open and our lock:
            # the lock that counts is on the file now at the path
            os.close(fd)
        self.fd = fd
        self.add_pid(os.getpid())
        return self

    def add_pid(self, pid: int) -> None:
        """List ``pid`` (e.g. the training's) as a holder too."""
        self.pids.append(pid)
        text = json.dumps(dict(pids=self.pids, host=socket.gethostname()))
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, text.encode(), 0)

    def release(self) -> None:
        if self.fd is None:
            return
        if not any(_alive(p) for p in self.pids if p != os.getpid()):
            os.remove(self.path)  # while locked: nobody holds a stale copy
        # closing (not LOCK_UN) leaves the lock to a training that still
        # has the file open
        os.close(self.fd)
        self.fd = None


@contextlib.contextmanager
def hold_run_folder(folder: str):
    """Hold ``folder`` for the ``with`` block (yields the
    :class:`RunFolderLock`); :class:`RunFolderBusyError` if a live process
    holds it."""
    lock = RunFolderLock(folder).acquire()
    try:
        yield lock
    finally:
        lock.release()


# ------------------------------------------------------------- the signals
class _Forwarder:
    """Handlers that pass the stop signals on to the training."""

    def __init__(self, log: Callable[[str], None]) -> None:
        self.log = log
        self.pid: Optional[int] = None
        self.received: List[int] = []
        self.numbers = [getattr(signal, name) for name in FORWARDED
                        if hasattr(signal, name)]
        self.previous = {}

    def __enter__(self) -> '_Forwarder':
        # from a thread other than the main one Python cannot handle
        # signals: the training then shares the study's fate
        self.active = threading.current_thread() is threading.main_thread()
        if self.active:
            for number in self.numbers:
                self.previous[number] = signal.signal(number, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for number, handler in self.previous.items():
            signal.signal(number, handler)

    def _handle(self, signum: int, frame) -> None:
        self.received.append(signum)
        name = signal.Signals(signum).name
        if self.pid is None:
            return  # passed on once the training has started
        try:
            os.kill(self.pid, getattr(signal, FORWARDED[name]))
        except ProcessLookupError:
            return  # it has ended: the wait returns now
        self.log(f'{name}: passed on to the training (process '
                 f'{self.pid}); waiting for it to save a checkpoint and '
                 'stop' if len(self.received) == 1 else
                 f'{name} again: passed on (a second Ctrl-C stops it at '
                 'once, without a checkpoint)')

    def started(self, pid: int) -> None:
        """The training runs: from now on signals go to ``pid``; ones that
        came before are passed on now."""
        self.pid = pid
        early, self.received = self.received, []
        for signum in early:
            self._handle(signum, None)


#: runs as the training's process before it execs tools/train.py: asks
#: the kernel for a SIGTERM when the study dies (Linux's PR_SET_PDEATHSIG,
#: kept across exec), then checks that the study has not died already. In
#: a fresh process rather than subprocess's preexec_fn, which is unsafe
#: in a study whose torch has started threads.
PARENT_DEATH_LAUNCHER = """
import ctypes, os, signal, sys
try:
    ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
except (OSError, AttributeError):
    pass
if os.getppid() != int(sys.argv[1]):
    sys.exit('the study ended before its pretraining started')
os.execv(sys.argv[2], sys.argv[2:])
"""


def _stopped_with_the_study(command: List[str]) -> List[str]:
    """``command``, started so that it gets SIGTERM if the study dies
    without passing a signal on (Linux; elsewhere ``command``)."""
    if not sys.platform.startswith('linux'):
        return command
    return [sys.executable, '-c', PARENT_DEATH_LAUNCHER,
            str(os.getpid())] + command


# ------------------------------------------------------------------ timing
def _read_timing(path: str, log_path: str, log) -> dict:
    """``timing.json``; an attempt whose study died without recording it
    (``running`` left in the file) is counted up to the last write to the
    training's log."""
    timing = dict(seconds=0., peak_rss_mib=0., attempts=0, done=False)
    if osp.isfile(path):
        with open(path) as f:
            timing.update(json.load(f))
    running = timing.pop('running', None)
    if running is not None:
        end = osp.getmtime(log_path) if osp.isfile(log_path) else \
            running['started']
        seconds = max(0., end - running['started'])
        timing['seconds'] += seconds
        timing['attempts'] += 1
        log(f'counted an attempt whose study ended without recording it '
            f'(process {running.get("pid")}): {seconds:.0f} s, up to the '
            'last line of its train_stdout.log')
    return timing


def _write_json(path: str, data: dict) -> None:
    with open(path + '.tmp', 'w') as f:
        json.dump(data, f)
    os.replace(path + '.tmp', path)


def _stop_line(log_path: str, offset: int, returncode: int) -> str:
    """Where the training stopped: PreemptionHook's line in this attempt's
    part of its log, else its exit status and last line."""
    try:
        with open(log_path, 'rb') as f:
            f.seek(offset)
            lines = f.read().decode(errors='replace').splitlines()
    except OSError:
        lines = []
    for line in reversed(lines):
        match = STOP_LINE.search(line.strip())
        if match:
            return match.group(1)
    lines = [line.strip() for line in lines if line.strip()]
    how = (f'was killed by {signal.Signals(-returncode).name}'
           if returncode < 0 else f'exited with status {returncode}')
    return (f'the training {how} without saving a checkpoint'
            + (f'; its last line: {lines[-1]}' if lines else ''))


def _end_what_it_left(group: int, what: str, log) -> None:
    """Kill the processes left in the child's process group (its session)
    once the child has ended. A training killed while its data loader was
    starting leaves the loader's worker behind: the worker took the
    reaper for its parent, so torch's parent check never fires, and it
    holds the run folder's lock (an inherited descriptor) for good. The
    group's ID stays reserved while any member lives, so this never hits
    another process."""
    try:
        os.killpg(group, signal.SIGKILL)
    except ProcessLookupError:
        return  # nothing was left: the usual case
    log(f'the {what} had left processes behind (process group {group}, '
        'e.g. a data loader worker of a training killed while starting): '
        'killed them')


# ------------------------------------------------------------- the command
def hook_data_root_options(config: str, data_root: str) -> List[str]:
    """``--cfg-options`` pointing the online kNN hook's datasets at
    ``data_root`` too (the hook's index in ``custom_hooks`` differs by
    arm)."""
    from mmengine.config import Config
    hooks = Config.fromfile(config).get('custom_hooks', [])
    return [f'custom_hooks.{i}.{split}_dataset.data_root={data_root}'
            for i, hook in enumerate(hooks) if hook['type'] == 'OnlineKNNHook'
            for split in ('train', 'val')]


#: the name it had in the study tool
_hook_data_root_options = hook_data_root_options


def train_command(config: str, work_dir: str, seed: int, data_root: str,
                  cfg_options: Sequence[str], resume: bool) -> List[str]:
    """The command line of one attempt (``config`` relative to the clone
    or absolute)."""
    config = osp.join(ROOT, config)
    tool = osp.join(ROOT, 'tools', 'train.py')
    command = [sys.executable] + ([tool] if osp.isfile(tool) else
                                  ['-m', 'mixedae_mm.cli.train'])
    command += [config, '--work-dir', work_dir] + (
        ['--resume'] if resume else [])
    return command + [
        '--cfg-options', f'randomness.seed={seed}',
        f'train_dataloader.dataset.data_root={data_root}',
        *hook_data_root_options(config, data_root), *cfg_options]


def run_pretraining(config: str, work_dir: str, seed: int, data_root: str,
                    cfg_options: Sequence[str],
                    log: Callable[[str], None]) -> Tuple[str, float, float]:
    """Run (or continue) one pretraining in ``work_dir``; returns
    ``(checkpoint, seconds, peak RSS MiB)``, summed / maximised over every
    attempt (``timing.json``).

    ``config`` is relative to the clone or absolute; ``cfg_options`` are
    ``KEY=VALUE`` strings for ``tools/train.py`` (after the seed and the
    data root). See :func:`run_training` for the rest.
    """
    timing = run_training(
        work_dir, lambda resume: train_command(
            config, work_dir, seed, data_root, cfg_options, resume),
        log, what='pretraining', detail=f'{config} (seed {seed})')
    with open(osp.join(work_dir, 'last_checkpoint')) as f:
        checkpoint = f.read().strip()
    return checkpoint, timing['seconds'], timing['peak_rss_mib']


def run_training(work_dir: str, command_for: Callable[[bool], List[str]],
                 log: Callable[[str], None], what: str = 'training',
                 detail: str = '', log_name: str = 'train_stdout.log'
                 ) -> dict:
    """Run (or continue) one training (or test) child in ``work_dir``:
    ``command_for(resume)`` is its command line, ``resume`` true when the
    folder holds a ``last_checkpoint``; its output goes to
    ``work_dir/<log_name>``; ``what`` (a noun) and ``detail`` name it in
    messages. Returns the folder's ``timing.json``
    (``seconds``, ``peak_rss_mib``, ``attempts``, ``done``), summed /
    maximised over every attempt; a finished one is not run again.

    Raises :class:`RunFolderBusyError` if another process holds
    ``work_dir``, :class:`PretrainingFailedError` if the child fails and
    :class:`PretrainingStopped` if the study was told to stop (see the
    module doc).
    """
    with hold_run_folder(work_dir) as lock:
        timing_path = osp.join(work_dir, 'timing.json')
        log_path = osp.join(work_dir, log_name)
        timing = _read_timing(timing_path, log_path, log)
        if not timing['done']:
            _attempt(command_for, work_dir, log_path, what, detail, log,
                     lock, timing)
        _write_json(timing_path, timing)
    return timing


def _attempt(command_for, work_dir, log_path, what, detail, log, lock,
             timing) -> None:
    """One run of the child, recorded in ``timing``; raises if it did not
    finish."""
    timing_path = osp.join(work_dir, 'timing.json')
    resume = osp.isfile(osp.join(work_dir, 'last_checkpoint'))
    command = command_for(resume)
    if resume:
        log(f'continuing the stopped {what} from its last checkpoint')
    with open(log_path, 'ab') as out, _Forwarder(log) as forwarder:
        offset = out.tell()
        start = time.perf_counter()
        # a study killed outright cannot record its attempt: this lets the
        # next call count it (_read_timing)
        _write_json(timing_path, dict(
            timing, running=dict(started=time.time(), pid=os.getpid())))
        try:
            process = subprocess.Popen(
                # PR_SET_PDEATHSIG fires when the thread that forked ends:
                # only the main thread lives as long as the study
                _stopped_with_the_study(command) if forwarder.active
                else command, stdout=out, stderr=subprocess.STDOUT,
                cwd=ROOT if osp.isdir(ROOT) else None,
                # its own session: a terminal's Ctrl-C reaches it once,
                # from the study; the lock stays held while it runs
                start_new_session=True, pass_fds=(lock.fd, ))
        except BaseException:
            _write_json(timing_path, timing)  # no attempt ran
            raise
        lock.add_pid(process.pid)
        forwarder.started(process.pid)
        # a signal interrupts the wait only to run its handler (PEP 475)
        _, status, usage = os.wait4(process.pid, 0)
        forwarder.pid = None  # reaped: its PID may be another's now
        process.returncode = returncode = os.waitstatus_to_exitcode(status)
        _end_what_it_left(process.pid, what, log)
        received = list(forwarder.received)
    timing['seconds'] += time.perf_counter() - start
    timing['peak_rss_mib'] = max(timing['peak_rss_mib'],
                                 usage.ru_maxrss / 1024)
    timing['attempts'] += 1
    timing['done'] = returncode == 0
    _write_json(timing_path, timing)
    if received:
        signum = received[0]
        line = (f'the {what} had finished' if returncode == 0 else
                _stop_line(log_path, offset, returncode))
        log(f'{what} {work_dir}: {line}')
        log(f'stopped by {signal.Signals(signum).name} after '
            f'{timing["seconds"]:.0f} s of {what} in '
            f'{timing["attempts"]} attempt(s) (timing.json); run the study '
            'again to continue')
        raise PretrainingStopped(signum, line)
    if returncode != 0:
        raise PretrainingFailedError(
            f'{what} {detail or work_dir} failed with exit code '
            f'{returncode}: see {log_path}; run the study again to '
            'continue it')


# ---------------------------------------------------------------- a study
class StudyStopped(Exception):
    """A stop signal outside a training (which handles its own)."""

    def __init__(self, signum):
        super().__init__(signum)
        self.signum = signum


def _raise_stopped(signum, frame):
    raise StudyStopped(signum)


def run_study(body: Callable[[], None], prog: str) -> None:
    """Run a study tool's ``body`` so that a stop signal ends it with one
    line and status 128 + signal (after a running training has saved and
    stopped: :func:`run_training`), and its errors (a failed run, a busy
    folder) are one line too. Call it first, so that SIGTERM or Ctrl-C
    during the imports is handled the same way."""
    previous = signal.signal(signal.SIGTERM, _raise_stopped)
    try:
        try:
            return body()
        except (PretrainingFailedError, RunFolderBusyError) as err:
            sys.exit(f'error: {err}')
    except KeyboardInterrupt:
        signum = signal.SIGINT
    except StudyStopped as stop:
        signum = stop.signum
    finally:
        signal.signal(signal.SIGTERM, previous)
    name = signal.Signals(signum).name
    print(f'[{prog} {time.strftime("%H:%M:%S")}] stopped by {name}; the '
          'finished runs are kept: run the study again to continue',
          file=sys.stderr, flush=True)
    sys.exit(128 + signum)
