#!/usr/bin/env bash
# Creates .venv at the repo root with the pinned stack, and installs Debian's opencv-doc
# (real test videos) when it is missing and we may install packages.
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3

if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
# A no-op when everything is already installed at the pinned versions.
.venv/bin/python -m pip install -q --disable-pip-version-check -r requirements.txt

if [ ! -f /usr/share/doc/opencv-doc/examples/data/Megamind.avi ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "setup: installing Debian's opencv-doc (sample videos used by the tests)"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq opencv-doc >/dev/null
  else
    echo "setup: opencv-doc is not installed; run 'sudo apt-get install opencv-doc' for the video tests" >&2
  fi
fi
echo "setup: environment ready (.venv)"
