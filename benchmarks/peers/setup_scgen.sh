#!/usr/bin/env bash
# scGen (PyPI scgen 2.1.0) in $PEER_ENVS/scgen. scgen 2.1.0 asks only scvi-tools>=0.15; the newest scvi-tools
# (1.4) needs anndata>=0.11 and no longer matches scgen's code, so scvi-tools is pinned to 0.20.3 (anndata 0.10).
PEER=scgen
source "$(dirname "$0")/_venv.sh"
"${PIP[@]}" torch==2.13.0 scgen==2.1.0 scvi-tools==0.20.3 anndata==0.10.9 numpy==1.26.4 pandas==2.2.3 \
  scanpy==1.10.4 scipy==1.14.1
"$VENV/bin/python" -c "import scgen, scvi, torch; print('scgen ok, scvi', scvi.__version__, 'torch', torch.__version__)"
