#!/usr/bin/env bash
# Install everything, then check style and types and run the whole test suite (unit, app,
# fault and browser tests). Arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --with-browser
PY=${PYTHON:-python3}
"$PY" -m ruff check .
"$PY" -m mypy   # training/ and explorer/, as configured in pyproject.toml
exec "$PY" -m pytest -q "$@"
