#!/usr/bin/env bash
# The GPU check in one command (docs/benchmark.md, "The GPU check"):
#   1. installs the wheels carried in gpu_wheels/ (tools/gpu_check_fetch_wheels.sh
#      downloads them) with pip --no-index --no-deps into a folder put first on
#      PYTHONPATH, so the machine's own torch is used and nothing is fetched;
#   2. runs tools/analysis_tools/gpu_check.py: the MixedAE-vs-MAE benchmark at
#      several batches and the ViT-B recipe's training + resume, each under
#      its own timeout.
# Writes $OUT/gpu_check.json and $OUT/gpu_check.log (OUT defaults to
# work_dirs/gpu_check). On a CPU, at a tiny size:
#   GPU_CHECK_DEVICE=cpu GPU_CHECK_TINY=1 tools/gpu_check.sh
# GPU_CHECK_INSTALL: auto (default: install when gpu_wheels/ has wheels, else
# use the packages already importable), 1 (wheels required), 0 (skip).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PY="${PYTHON:-python3}"
OUT="${OUT:-$ROOT/work_dirs/gpu_check}"
WHEELS="${GPU_CHECK_WHEELS:-$ROOT/gpu_wheels}"
SITE="${GPU_CHECK_SITE:-${TMPDIR:-/tmp}/mixedae_gpu_check_site}"
LIST="$ROOT/requirements/gpu_check_wheels.txt"
MODE="${GPU_CHECK_INSTALL:-auto}"

fail() { echo "gpu_check.sh: error: $*" >&2; finish 2; }
# let the tees finish writing the log before the caller collects $OUT
finish() {
  if [ -n "${TEE_OUT:-}" ]; then
    exec 1>&3 2>&4 3>&- 4>&-
    wait "$TEE_OUT" "$TEE_ERR" 2>/dev/null || true
  fi
  exit "$1"
}
case "$MODE" in auto|0|1) ;; *) fail "GPU_CHECK_INSTALL=$MODE: use auto, 1 or 0";; esac

mkdir -p "$OUT"
LOG="$OUT/gpu_check.log"
: >"$LOG"
# everything from here on goes to the log as well
exec 3>&1 4>&2
exec > >(tee -a "$LOG")
TEE_OUT=$!
exec 2> >(tee -a "$LOG" >&2)
TEE_ERR=$!

have_wheels=0
compgen -G "$WHEELS/*.whl" >/dev/null && have_wheels=1
if [ "$MODE" = 0 ]; then
  status="skipped (GPU_CHECK_INSTALL=0)"
elif [ "$have_wheels" = 1 ]; then
  echo "[gpu_check] installing the wheels of $WHEELS into $SITE (no index, no deps)"
  requirements="$(mktemp)"
  # setuptools only where pkg_resources is missing: mmengine's Config needs it
  if "$PY" -c 'import pkg_resources' >/dev/null 2>&1; then
    grep -v '^setuptools==' "$LIST" >"$requirements"
  else
    cp "$LIST" "$requirements"
  fi
  rm -rf "$SITE"
  "$PY" -m pip install --disable-pip-version-check --root-user-action=ignore -q --no-index --no-deps \
    --find-links "$WHEELS" --target "$SITE" -r "$requirements" ||
    fail "pip could not install the wheels of $WHEELS (above): fetch them" \
         "again with tools/gpu_check_fetch_wheels.sh"
  rm -f "$requirements"
  export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
  export GPU_CHECK_SITE_USED="$SITE"
  status="installed $(ls "$SITE" | grep -c '\.dist-info$') wheels from $WHEELS"
elif [ "$MODE" = 1 ]; then
  fail "GPU_CHECK_INSTALL=1 but $WHEELS has no wheels: run" \
       "tools/gpu_check_fetch_wheels.sh where there is internet access and carry gpu_wheels/"
elif "$PY" -c 'import mmengine, mmcv, mmpretrain' >/dev/null 2>&1; then
  status="skipped: no wheels in $WHEELS, OpenMMLab packages already importable"
else
  fail "mmpretrain is not importable and $WHEELS has no wheels: run" \
       "tools/gpu_check_fetch_wheels.sh where there is internet access and carry gpu_wheels/"
fi
echo "[gpu_check] install: $status"
export GPU_CHECK_INSTALL_STATUS="$status"
export OUT
# the tools import mixedae_mm from this clone (it is not installed there)
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"

rc=0
"$PY" tools/analysis_tools/gpu_check.py || rc=$?
finish "$rc"
