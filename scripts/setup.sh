#!/usr/bin/env bash
# Install what the app and the tests need: Python packages, and (for browser tests)
# Debian's chromium. Safe to run again: it skips what is already there.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if ! "$PY" -c "import torch, torchvision, streamlit, mlxtend, safetensors, openTSNE, playwright, plotly, pytest, kaleido, websocket, psutil" 2>/dev/null \
   || [ "${FORCE_INSTALL:-0}" = 1 ]; then
  "$PY" -m pip install --quiet --disable-pip-version-check -r requirements.txt
fi
if [ "${1:-}" = "--with-browser" ] && ! command -v chromium >/dev/null 2>&1; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
fi
