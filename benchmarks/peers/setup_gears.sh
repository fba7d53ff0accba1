#!/usr/bin/env bash
# GEARS (PyPI cell-gears) in $PEER_ENVS/gears (default /work/peer_envs/gears).
PEER=gears
source "$(dirname "$0")/_venv.sh"
"${PIP[@]}" torch==2.13.0 torch-geometric==2.6.1 cell-gears==0.1.2 anndata==0.10.9 scanpy==1.10.4 \
  numpy==1.26.4 pandas==2.2.3 scipy==1.14.1 scikit-learn==1.5.2 dcor==0.6 networkx==3.4.2 tqdm
"$VENV/bin/python" -c "import gears, torch; print('gears ok, torch', torch.__version__)"
