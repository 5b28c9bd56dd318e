#!/usr/bin/env bash
# torchrun launcher shared by dist_train.sh, dist_test.sh and dist_analyze.sh:
#   bash tools/dist_run.sh TOOL.py NPROC [tool args...]
# Works with gloo on CPU and nccl on GPU (calibseg.compat picks the backend). Multi-node: set NNODES,
# NODE_RANK, MASTER_ADDR and PORT. PYTHON overrides the interpreter (default: the repository's .venv).
set -euo pipefail
TOOL=$1
NPROC=$2
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
PORT=${PORT:-29500}
MASTER_ADDR=${MASTER_ADDR:-"127.0.0.1"}
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PY=${PYTHON:-$( [[ -x "$ROOT/.venv/bin/python" ]] && echo "$ROOT/.venv/bin/python" || echo python)}
PYTHONPATH="$ROOT:${PYTHONPATH:-}" \
"$PY" -m torch.distributed.run --nnodes="$NNODES" --node_rank="$NODE_RANK" --master_addr="$MASTER_ADDR" \
    --nproc_per_node="$NPROC" --master_port="$PORT" \
    "$ROOT/tools/$TOOL" --launcher pytorch "${@:3}"
