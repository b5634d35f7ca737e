#!/usr/bin/env bash
# Creates .venv at the repo root with the pinned stack, and installs Debian's opencv-doc
# (real test videos) when it is missing and we may install packages.
# torch comes from PyPI, built for CUDA 13 (NVIDIA driver 580 or newer). On a cluster whose driver
# is older, TORCH_CUDA=cu126 (or another CUDA 12 index PyTorch publishes for this torch version)
# installs the same torch version built for CUDA 12 from PyTorch's own index (docs/cluster.md).
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3

if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
if [ -n "${TORCH_CUDA:-}" ]; then
  case "$TORCH_CUDA" in
    cu12[0-9]|cu12[0-9][0-9]|cpu) ;;
    *) echo "setup: TORCH_CUDA=$TORCH_CUDA: expected cu12X (a CUDA 12 build, e.g. cu126) or cpu" >&2; exit 2 ;;
  esac
  pins=$(grep -E '^(torch|torchvision)==' requirements.txt | tr '\n' ' ')
  echo "setup: installing $pins from https://download.pytorch.org/whl/$TORCH_CUDA"
  # shellcheck disable=SC2086  # two requirements
  .venv/bin/python -m pip install -q --disable-pip-version-check --index-url "https://download.pytorch.org/whl/$TORCH_CUDA" $pins
fi
# A no-op when everything is already installed at the pinned versions (a CUDA 12 build of the
# pinned torch version satisfies the pin).
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
