#!/usr/bin/env bash
# scGen (PyPI scgen 2.1.0) in $PEER_ENVS/scgen. scgen 2.1.0 asks only scvi-tools>=0.15 but imports
# scvi._compat.Literal, which scvi-tools 0.20.3 turns into a raised DeprecationWarning (and 1.x removed); scvi-tools
# 0.19 needs pytorch-lightning 1.7, which does not resolve with the CPU torch 2.13 pin. run_scgen.py therefore
# replaces scvi._compat by a module re-exporting typing.Literal and maps the removed LossRecorder onto LossOutput
# before importing scgen; the check below provides both names for the import.
PEER=scgen
source "$(dirname "$0")/_venv.sh"
"${PIP[@]}" torch==2.13.0 scgen==2.1.0 scvi-tools==0.20.3 anndata==0.10.9 numpy==1.26.4 pandas==2.2.3 \
  scanpy==1.10.4 scipy==1.14.1 requests==2.32.3 jax==0.4.30 jaxlib==0.4.30 flax==0.8.5 optax==0.2.3 \
  chex==0.1.86 numpyro==0.15.3
"$VENV/bin/python" -c "import sys, types, typing; m = types.ModuleType('scvi._compat'); m.Literal = typing.Literal
sys.modules['scvi._compat'] = m
import scvi.module.base as b; b.LossRecorder = b.LossOutput
import scgen, scvi, torch; print('scgen ok, scvi', scvi.__version__, 'torch', torch.__version__)"
