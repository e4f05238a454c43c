#!/usr/bin/env bash
# Install the speed peer, musicnn 0.1.0 (MTT_vgg), in its OWN virtual environment
# (never the project's): TF 2.15 CPU, numpy < 2, librosa 0.10. See ../shared/docs/PEERS.md.
#
#   benchmarks/setup_peer.sh [PEER_VENV]      # default: benchmarks/.peer-venv (git-ignored)
#
# Idempotent: an environment whose musicnn import works is kept as is.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="${1:-$HERE/.peer-venv}"
PYTHON="${PEER_PYTHON:-python3}"

if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c "import musicnn, tensorflow, librosa" >/dev/null 2>&1; then
  echo "peer venv ready: $VENV"
  exit 0
fi
"$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q "tensorflow-cpu==2.15.1" "numpy<2" "librosa==0.10.2.post1"
# Plain `pip install musicnn` pins numpy<1.17, which does not build on Python 3.11: skip its deps.
"$VENV/bin/python" -m pip install -q --no-deps "musicnn==0.1.0"
"$VENV/bin/python" -c "import musicnn, tensorflow as tf; print('peer venv ready:', '$VENV', 'tf', tf.__version__)"
