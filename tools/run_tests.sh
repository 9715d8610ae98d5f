#!/usr/bin/env bash
# README command 2: set up what is missing, then run the test suite on CPU.
# Extra arguments go to pytest, e.g. -k ops
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash tools/setup_env.sh
"${PYTHON:-python3}" -m pytest tests "$@"
