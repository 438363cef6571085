#!/usr/bin/env bash
# Set up (or reuse) .venv, then run the whole test suite. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# The dashboard's browser tests drive Debian's Chromium (never a browser download).
bash scripts/install_browser.sh >/dev/null
exec .venv/bin/python -m pytest -q -ra "$@"
