#!/usr/bin/env bash
# Usage: tools/dist_train.sh CONFIG NUM_PROCS [train.py args...]
# One process per GPU (NCCL); on a machine without GPUs the processes run on
# the CPU with gloo. Multi-node: set NNODES, NODE_RANK, MASTER_ADDR, PORT.
# On one node without PORT, torchrun --standalone picks a free port itself, so
# two jobs on one machine never race for a fixed one.
set -euo pipefail
CONFIG=$1
NPROCS=$2
NNODES=${NNODES:-1}
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

if [ "$NNODES" = 1 ] && [ -z "${PORT:-}" ]; then
  RENDEZVOUS=(--standalone)
else
  RENDEZVOUS=(
    --nnodes="$NNODES"
    --node_rank="${NODE_RANK:-0}"
    --master_addr="${MASTER_ADDR:-127.0.0.1}"
    --master_port="${PORT:-29500}")
fi

PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" \
torchrun \
  "${RENDEZVOUS[@]}" \
  --nproc_per_node="$NPROCS" \
  "$ROOT/tools/train.py" "$CONFIG" --launcher pytorch "${@:3}"
