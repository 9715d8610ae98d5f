"""Test helper: run a script, capping the size of the files it writes once
it has put a given file in place.

    python tests/helpers/limit_file_size_after.py iter_1.pth 1048576 \
        tools/train.py ...

After the first ``os.replace`` onto a file named ``iter_1.pth`` (the atomic
write of that checkpoint), RLIMIT_FSIZE is lowered to the given number of
bytes with SIGXFSZ ignored, so a later write past it fails with EFBIG
(``OSError: [Errno 27] File too large``), as a full quota or a file-size
limit would. Unix only.
"""
import os
import os.path as osp
import resource
import runpy
import signal
import sys

_replace = os.replace


def main():
    target, limit, script = sys.argv[1], int(sys.argv[2]), sys.argv[3]

    def replace(src, dst, *args, **kwargs):
        _replace(src, dst, *args, **kwargs)
        if osp.basename(str(dst)) == target:
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            hard = resource.getrlimit(resource.RLIMIT_FSIZE)[1]
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))

    os.replace = replace
    sys.argv = sys.argv[3:]
    sys.path.insert(0, osp.dirname(osp.abspath(script)))
    runpy.run_path(script, run_name='__main__')


if __name__ == '__main__':
    main()
