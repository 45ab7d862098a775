#!/usr/bin/env bash
# Install what the app and the tests need: the project itself (pyproject.toml, with its
# test extras) and, with --with-browser, Debian's chromium (browser tests) and nginx (the
# classroom proxy of scripts/serve.sh and its test). Safe to run again: pip skips what is
# installed, apt only runs for a missing package.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
EXTRAS=${VAE_EXTRAS:-test}
"$PY" -m pip install --quiet --disable-pip-version-check -e ".[$EXTRAS]"
if [ "${1:-}" = "--with-browser" ]; then
  MISSING=()
  command -v chromium >/dev/null 2>&1 || MISSING+=(chromium)
  command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || MISSING+=(nginx)
  if [ ${#MISSING[@]} -gt 0 ]; then
    SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${MISSING[@]}" >/dev/null
  fi
fi
