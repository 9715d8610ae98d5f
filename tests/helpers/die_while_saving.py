"""Test helper: run a script, SIGKILLing it half-way through writing a file.

    python tests/helpers/die_while_saving.py iter_2.pth tools/train.py ...

When the process flushes a file named ``iter_2.pth`` (or a temporary file
for it, ``.iter_2.pth.*.tmp``) to disk, the file is cut to half its size and
the process killed: a machine dying while it saves a checkpoint, with no
clean-up and no ``finally`` blocks. Linux only (/proc/self/fd).
"""
import os
import os.path as osp
import runpy
import signal
import sys

_fsync = os.fsync


def main():
    target, script = sys.argv[1], sys.argv[2]

    def fsync(fd):
        try:
            name = osp.basename(os.readlink(f'/proc/self/fd/{fd}'))
        except OSError:
            name = ''
        if name == target or name.startswith(f'.{target}.'):
            os.ftruncate(fd, os.fstat(fd).st_size // 2)
            os.kill(os.getpid(), signal.SIGKILL)
        _fsync(fd)

    os.fsync = fsync
    sys.argv = sys.argv[2:]
    sys.path.insert(0, osp.dirname(osp.abspath(script)))
    runpy.run_path(script, run_name='__main__')


if __name__ == '__main__':
    main()
