#!/usr/bin/env bash
# Install everything, then run the whole test suite (unit, app, fault and browser tests).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --with-browser
PY=${PYTHON:-python3}
"$PY" -m ruff check .
exec "$PY" -m pytest -q "$@"
