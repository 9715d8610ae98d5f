#!/usr/bin/env bash
# Download, on a machine with internet access, the wheels tools/gpu_check.sh
# installs offline on a GPU machine: requirements/gpu_check_wheels.txt, into
# gpu_wheels/ (git-ignored; GPU_CHECK_WHEELS overrides). Pure-Python wheels
# only, so Python and platform of this machine do not matter. Prints the
# folder's size, which must stay under GPU_CHECK_WHEELS_MAX_MIB (60: what
# the device tool carries is 64 MiB in all).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-python3}"
WHEELS="${GPU_CHECK_WHEELS:-$ROOT/gpu_wheels}"
MAX_MIB="${GPU_CHECK_WHEELS_MAX_MIB:-60}"
LIST="$ROOT/requirements/gpu_check_wheels.txt"

# a fresh download, so no wheel of an earlier pin stays behind
staging="$(mktemp -d)"
trap 'rm -rf "$staging"' EXIT
"$PY" -m pip download --disable-pip-version-check -q --no-deps \
  --only-binary=:all: -d "$staging" -r "$LIST"

compiled=$(cd "$staging" && ls | grep -v -- '-none-any\.whl$' || true)
if [ -n "$compiled" ]; then
  echo "gpu_check_fetch_wheels.sh: error: not pure-Python (would not install" \
       "on another Python or platform): $compiled; pin a version of it that" \
       "ships a *-none-any wheel in $LIST" >&2
  exit 1
fi
expected=$(grep -cE '^[A-Za-z]' "$LIST")
got=$(ls "$staging" | wc -l)
if [ "$got" != "$expected" ]; then
  echo "gpu_check_fetch_wheels.sh: error: $got wheels for $expected" \
       "requirements in $LIST" >&2
  exit 1
fi

rm -rf "$WHEELS"
mkdir -p "$WHEELS"
mv "$staging"/*.whl "$WHEELS"/
bytes=$(du -cb "$WHEELS"/*.whl | tail -n1 | cut -f1)
mib=$(( (bytes + 2**20 - 1) / 2**20 ))
echo "gpu_check_fetch_wheels.sh: $got wheels, $bytes bytes (${mib} MiB) in $WHEELS"
if [ "$mib" -gt "$MAX_MIB" ]; then
  echo "gpu_check_fetch_wheels.sh: error: ${mib} MiB is over" \
       "GPU_CHECK_WHEELS_MAX_MIB=$MAX_MIB (the device tool carries 64 MiB of" \
       "ignored paths in all)" >&2
  exit 1
fi
