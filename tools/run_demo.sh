#!/usr/bin/env bash
# README command 1: set up what is missing, build the embedded demo dataset,
# pretrain a tiny MixedAE on CPU, then draw its reconstructions, homologous
# attention and curves into work_dirs/demo/figures/. Extra arguments go to
# tools/train.py, e.g. --cfg-options train_cfg.max_iters=50
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash tools/setup_env.sh
PY="${PYTHON:-python3}"
"$PY" tools/dataset_converters/build_demo_data.py data/demo_photos
"$PY" tools/train.py configs/demo/mixedae_vit-tiny-p8_demo.py \
  --work-dir work_dirs/demo "$@"
"$PY" tools/visualization/demo_figures.py work_dirs/demo --out work_dirs/demo/figures
