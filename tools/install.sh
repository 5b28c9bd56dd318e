#!/usr/bin/env bash
# Idempotent installer: creates .venv/ in the repository and installs the pinned stack
# (requirements/constraints.txt) and calibseg in editable mode. `--tests` adds the test-only packages.
# mmcv 2.1.0 is built from source with its compiled ops when pip has no cached wheel (~16 min on 2 cores);
# later installs on the same machine reuse pip's cached wheel.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=.venv
PY="$VENV/bin/python"
MODE=runtime
[[ "${1:-}" == "--tests" ]] && MODE=tests
HASH=$(cat requirements/*.txt setup.cfg setup.py | sha1sum | cut -d' ' -f1)
STAMP="$VENV/.installed-$MODE-$HASH"
[[ -f "$STAMP" ]] && exit 0

START=$(date +%s)
[[ -x "$PY" ]] || python3 -m venv "$VENV"
# pip's own output goes to a log (shown when a step fails), so the console keeps one line per step
LOG="$VENV/install.log"
: > "$LOG"
PIP=("$PY" -m pip install --disable-pip-version-check -c requirements/constraints.txt)
pip_step() {
  if ! "$@" >>"$LOG" 2>&1; then
    echo "[calibseg install] failed; the last lines of $LOG:" >&2
    tail -n 40 "$LOG" >&2
    exit 1
  fi
}
echo "[calibseg install] torch and build tools (pip's log: $LOG)"
pip_step "${PIP[@]}" torch
pip_step "${PIP[@]}" pip wheel ninja setuptools numpy
if ! "$PY" -c "import mmcv.ops" >/dev/null 2>&1; then
  echo "[calibseg install] mmcv 2.1.0 with compiled ops (a source build takes ~16 min on 2 cores the first time)"
  MMCV_WITH_OPS=1 MAX_JOBS="${MAX_JOBS:-$(nproc)}" pip_step "${PIP[@]}" --no-build-isolation mmcv
fi
echo "[calibseg install] OpenMMLab stack and calibseg (editable)"
pip_step "${PIP[@]}" -r requirements/runtime.txt
[[ $MODE == tests ]] && pip_step "${PIP[@]}" -r requirements/tests.txt
pip_step "${PIP[@]}" --no-build-isolation --no-deps -e .
"$PY" -c "import mmcv.ops, mmseg.models, calibseg.models; print('[calibseg install] ok: torch', \
__import__('torch').__version__, '| mmcv', __import__('mmcv').__version__, '| mmseg', __import__('mmseg').__version__)"
rm -f "$VENV"/.installed-*
touch "$STAMP"
[[ $MODE == tests ]] && touch "$VENV/.installed-runtime-$HASH"
echo "[calibseg install] done in $(( $(date +%s) - START )) s"
