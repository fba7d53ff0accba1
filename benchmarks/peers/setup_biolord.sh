#!/usr/bin/env bash
# biolord (PyPI biolord 0.0.3) in $PEER_ENVS/biolord. biolord pulls scvi-tools 1.4, which needs anndata >= 0.11 (anndata.io).
PEER=biolord
source "$(dirname "$0")/_venv.sh"
"${PIP[@]}" torch==2.13.0 biolord==0.0.3 "anndata>=0.11" numpy==1.26.4 pandas==2.2.3
"$VENV/bin/python" -c "import biolord, scvi, torch; print('biolord ok, scvi', scvi.__version__, 'torch', torch.__version__)"
