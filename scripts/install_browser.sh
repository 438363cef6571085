#!/usr/bin/env bash
# What the dashboard's browser tests need: Debian's Chromium at /usr/bin/chromium (never a
# browser download: `playwright install` is not used) and Playwright's Python package in .venv.
# Idempotent; run from the test set-up after scripts/setup.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x /usr/bin/chromium ]; then
  SUDO=""
  if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium
fi
PY=.venv/bin/python
if [ ! -x "$PY" ]; then PY=${PYTHON:-python3}; fi
if ! "$PY" -c "import playwright.sync_api" 2>/dev/null; then
  "$PY" -m pip install -q --disable-pip-version-check playwright
fi
/usr/bin/chromium --version 2>/dev/null | head -1 || true
