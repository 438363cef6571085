#!/usr/bin/env bash
# Create or reuse .venv at the repository root and install AutoTune with its dev and bench extras.
# torch is installed first and pinned: the CPU build 2.13.0 lies on this machine's disk, while an
# unpinned torch requirement resolved first would pull a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=.venv/.autotune-installed
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  .venv/bin/python -m pip install -q --disable-pip-version-check "torch==2.13.0" 2>&1 | grep -v "^WARNING: Location" || true
  .venv/bin/python -m pip install -q --disable-pip-version-check -e ".[dev,bench]" 2>&1 | grep -v "^WARNING: Location" || true
  .venv/bin/python -c "import autotune, torch; assert torch.__version__.startswith('2.13.0'), torch.__version__"
  echo "$want" > "$stamp"
fi
