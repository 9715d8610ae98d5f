#!/usr/bin/env bash
# README command 2: set up what is missing, then run the test suite on CPU.
# Extra arguments go to pytest, e.g. -k ops, or -n 0 for one process.
#
# One pytest worker per core plus one (pytest-xdist), each test file on one
# worker, one thread per process: much of the suite starts interpreters and
# imports OpenMMLab, or waits for a child training or for a checkpoint on
# disk; the extra worker uses what those waits leave idle (2 cores: 84% busy
# with 2 workers, 91% with 3). At most 4: a test's trainings take 1-3 GiB.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash tools/setup_env.sh
# nproc counts OMP_NUM_THREADS as a limit: ask it before setting that
CORES=$(env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT nproc)
WORKERS=$(( CORES + 1 < 4 ? CORES + 1 : 4 ))
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
# --no-loadscope-reorder: files in collection order, which tests/conftest.py
# makes the longest first (xdist would order them by their number of tests)
"${PYTHON:-python3}" -m pytest tests -n "$WORKERS" --dist loadfile \
  --no-loadscope-reorder "$@"
