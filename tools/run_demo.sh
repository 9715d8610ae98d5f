#!/usr/bin/env bash
# README command 1: set up what is missing, build the embedded demo dataset,
# and pretrain a tiny MixedAE on CPU. Extra arguments go to tools/train.py,
# e.g. --cfg-options train_cfg.max_iters=50
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash tools/setup_env.sh
PY="${PYTHON:-python3}"
"$PY" tools/dataset_converters/build_demo_data.py data/demo_photos
"$PY" tools/train.py configs/demo/mixedae_vit-tiny-p8_demo.py \
  --work-dir work_dirs/demo "$@"
