#!/usr/bin/env bash
# Create .venv (Python >= 3.11) and install biojepa with its test, doc, bench, tune and chem extras.
# torch is pinned through constraints.txt so that pip takes the CPU build and never the CUDA wheels.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e ".[test,doc,bench,tune,chem]"
.venv/bin/python -c "import biojepa, torch; print(f'biojepa {biojepa.__version__} with torch {torch.__version__} in .venv')"
