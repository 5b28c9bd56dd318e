#!/usr/bin/env bash
# Distributed calibration analysis with torchrun: bash tools/dist_analyze.sh CONFIG CHECKPOINT NPROC [args...]
# (the same report as one process; see tools/analyze_calibration.py)
set -euo pipefail
exec bash "$(dirname "$0")/dist_run.sh" analyze_calibration.py "$3" "$1" "$2" "${@:4}"
