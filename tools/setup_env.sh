#!/usr/bin/env bash
# Idempotent environment set-up for mixedae_mm on a fresh machine.
#
# Every step first checks whether its result is already there, so running it
# again costs seconds.  The slow part (compiling mmcv 2.1.0's ops, ~11 min on
# 2 cores) happens once: the built wheel is cached outside the clone in
# $MIXEDAE_WHEEL_CACHE (default ~/.cache/mixedae_mm/wheels).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-python3}"
PIP=("$PY" -m pip install --disable-pip-version-check -q)
WHEEL_CACHE="${MIXEDAE_WHEEL_CACHE:-$HOME/.cache/mixedae_mm/wheels}"

TORCH_VERSION=2.14.1
TORCHVISION_VERSION=0.29.1
MMCV_VERSION=2.1.0
# torch 2.14 declares setuptools>=77.0.3; mmcv 2.1.0's setup.py imports
# pkg_resources, which setuptools 81 removed.  A lower pin (<70) would make pip
# quietly downgrade torch to satisfy it, so the window is exactly [77.0.3, 81).
SETUPTOOLS_SPEC='setuptools>=77.0.3,<81'

log() { printf '[setup_env] %s\n' "$*"; }

# run from / so a package in the current folder does not count as installed
have_py() { (cd / && "$PY" - "$@" >/dev/null 2>&1); }

# ---------------------------------------------------------------- torch
if have_py <<PYEOF
import torch, torchvision, setuptools
assert torch.__version__.split('+')[0] == '$TORCH_VERSION'
assert torchvision.__version__.split('+')[0] == '$TORCHVISION_VERSION'
major = int(setuptools.__version__.split('.')[0])
assert 77 <= major < 81
PYEOF
then
  log "torch $TORCH_VERSION, torchvision $TORCHVISION_VERSION present"
else
  log "installing torch $TORCH_VERSION + torchvision $TORCHVISION_VERSION"
  # One pip call, so the resolver sees the setuptools window and torch together.
  "${PIP[@]}" "torch==$TORCH_VERSION" "torchvision==$TORCHVISION_VERSION" "$SETUPTOOLS_SPEC"
fi

# ---------------------------------------------------------------- mmengine
"${PIP[@]}" "mmengine==0.10.7" "$SETUPTOOLS_SPEC" "torch==$TORCH_VERSION"

# ---------------------------------------------------------------- mmcv (full, with ops)
mmcv_ok() {
  have_py <<PYEOF
import mmcv
assert mmcv.__version__ == '$MMCV_VERSION'
from mmcv.ops import nms, RoIAlign  # compiled extension is importable
PYEOF
}
if mmcv_ok; then
  log "mmcv $MMCV_VERSION with ops present"
else
  mkdir -p "$WHEEL_CACHE"
  want_cuda=0
  if command -v nvcc >/dev/null 2>&1 && have_py <<<'import torch; assert torch.cuda.is_available()'; then
    want_cuda=1
  fi
  tag=$([ "$want_cuda" = 1 ] && echo cuda || echo cpu)
  cached=$(ls "$WHEEL_CACHE"/$tag/mmcv-$MMCV_VERSION-*.whl 2>/dev/null | head -n1 || true)
  if [ -z "$cached" ]; then
    log "building mmcv $MMCV_VERSION from source ($tag ops; ~11 min on 2 cores, once)"
    build=$(mktemp -d)
    # --no-build-isolation: the sdist's setup.py needs the torch installed above.
    "$PY" -m pip download -q --no-deps --no-binary :all: --no-build-isolation \
      "mmcv==$MMCV_VERSION" -d "$build"
    tar -xzf "$build"/mmcv-$MMCV_VERSION.tar.gz -C "$build"
    # torch 2.14's headers use C++20 features; mmcv 2.1.0 asks for C++17.
    sed -i 's/-std=c++17/-std=c++20/g' "$build/mmcv-$MMCV_VERSION/setup.py"
    mkdir -p "$WHEEL_CACHE/$tag"
    (cd "$build/mmcv-$MMCV_VERSION" && \
      MMCV_WITH_OPS=1 FORCE_CUDA=$want_cuda MAX_JOBS="${MAX_JOBS:-$(nproc)}" \
      "$PY" -m pip wheel --no-build-isolation --no-deps -w "$WHEEL_CACHE/$tag" .)
    rm -rf "$build"
    cached=$(ls "$WHEEL_CACHE"/$tag/mmcv-$MMCV_VERSION-*.whl | head -n1)
  fi
  log "installing cached $cached"
  # --no-deps then the light deps explicitly: keeps pip away from torch.
  "${PIP[@]}" --no-deps "$cached"
  "${PIP[@]}" addict packaging Pillow pyyaml yapf "opencv-python-headless>=3" "torch==$TORCH_VERSION"
  mmcv_ok || { log "mmcv installed but its ops do not import"; exit 1; }
fi

# ---------------------------------------------------------------- OpenMMLab codebases + tests
# torch is repeated in each call so no dependency can move it.
"${PIP[@]}" -r "$ROOT/requirements/runtime.txt" -r "$ROOT/requirements/optional.txt" \
  -r "$ROOT/requirements/tests.txt" "torch==$TORCH_VERSION" "torchvision==$TORCHVISION_VERSION" \
  "mmcv==$MMCV_VERSION" "$SETUPTOOLS_SPEC"

# ---------------------------------------------------------------- Fashion-MNIST
# The small-scale study and its tests read Debian's dataset-fashion-mnist
# (the four IDX .gz files in /usr/share/datasets/fashion-mnist).
FMNIST=/usr/share/datasets/fashion-mnist
if [ -f "$FMNIST/t10k-labels-idx1-ubyte.gz" ]; then
  log "Fashion-MNIST present in $FMNIST"
elif [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  log "installing Fashion-MNIST (Debian package dataset-fashion-mnist)"
  apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 || {
    apt-get update -q >/dev/null && apt-get install -y -q dataset-fashion-mnist >/dev/null; }
else
  log "Fashion-MNIST missing: install the Debian package dataset-fashion-mnist" \
      "(sudo apt-get install dataset-fashion-mnist); the study and its tests need it"
fi

# ---------------------------------------------------------------- this package
if ! have_py <<PYEOF
import os, mixedae_mm
assert os.path.realpath(os.path.dirname(mixedae_mm.__file__)) == os.path.realpath('$ROOT/mixedae_mm')
PYEOF
then
  log "installing mixedae_mm (editable)"
  "${PIP[@]}" --no-deps --no-build-isolation -e "$ROOT"
fi

# ---------------------------------------------------------------- final check
"$PY" - <<PYEOF
import torch, torchvision, mmcv, mmengine, mmpretrain
got = torch.__version__.split('+')[0]
if got != '$TORCH_VERSION':
    raise SystemExit(f'[setup_env] torch is {torch.__version__}, expected $TORCH_VERSION: '
                     'a dependency moved it; re-run tools/setup_env.sh')
print(f'[setup_env] ready: torch {torch.__version__}, torchvision {torchvision.__version__}, '
      f'mmcv {mmcv.__version__}, mmengine {mmengine.__version__}, mmpretrain {mmpretrain.__version__}')
PYEOF
