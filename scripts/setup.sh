#!/usr/bin/env bash
# Install what the app and the tests need: the project itself (pyproject.toml, with its
# test extras) and, for browser tests, Debian's chromium. Safe to run again: pip skips
# what is already installed, apt only runs when chromium is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
EXTRAS=${VAE_EXTRAS:-test}
"$PY" -m pip install --quiet --disable-pip-version-check -e ".[$EXTRAS]"
if [ "${1:-}" = "--with-browser" ] && ! command -v chromium >/dev/null 2>&1; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
fi
