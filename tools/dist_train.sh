#!/usr/bin/env bash
# Distributed training with torchrun: bash tools/dist_train.sh CONFIG NPROC [train.py args...]
# (gloo on CPU, nccl on GPU; multi-node: NNODES, NODE_RANK, MASTER_ADDR, PORT; see tools/dist_run.sh)
set -euo pipefail
exec bash "$(dirname "$0")/dist_run.sh" train.py "$2" "$1" "${@:3}"
