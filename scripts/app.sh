#!/usr/bin/env bash
# Install everything, train the demo runs if runs/ has none, then launch the app.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
PY=${PYTHON:-python3}
RUNS_DIR=${VAE_RUNS_DIR:-runs}
if ! ls "$RUNS_DIR"/*/model.safetensors >/dev/null 2>&1; then
  echo "No trained runs in $RUNS_DIR/: training the four demo runs once (2-D VAE, autoencoder,"
  echo "16-D VAE, 16-D beta=4 VAE), as many at once as there are free cores; each epoch"
  echo "prints 'run k of 4' and the time left, estimated from the epochs measured so far..."
  "$PY" -m training.demo --runs-dir "$RUNS_DIR"
fi
exec "$PY" -m streamlit run streamlit_app.py "$@" -- --runs-dir "$RUNS_DIR"
