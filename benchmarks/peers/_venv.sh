#!/usr/bin/env bash
# Shared by the setup_<peer>.sh scripts: create a fresh virtual environment for one peer outside the repository.
# Usage (sourced): PEER=gears; source _venv.sh  ->  $VENV, $PIP (pip with the CPU-torch constraint).
set -euo pipefail
PEER_ENVS="${PEER_ENVS:-/work/peer_envs}"
VENV="$PEER_ENVS/$PEER"
PYTHON="${PEER_PYTHON:-python3.11}"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
mkdir -p "$PEER_ENVS"
rm -rf "$VENV"
"$PYTHON" -m venv "$VENV"
"$VENV/bin/pip" install --quiet --upgrade "pip==24.3.1" "setuptools>=77.0.3,<81" wheel
# torch must stay the CPU build: an unpinned torch pulls the CUDA wheels.
PIP=("$VENV/bin/pip" install -c "$HERE/constraints-cpu.txt")
