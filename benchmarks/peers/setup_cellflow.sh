#!/usr/bin/env bash
# CellFlow (PyPI cellflow-tools 0.0.9, JAX) in $PEER_ENVS/cellflow; CPU jax. cellflow imports requests without declaring it.
PEER=cellflow
source "$(dirname "$0")/_venv.sh"
"${PIP[@]}" cellflow-tools==0.0.9 requests==2.32.3
"$VENV/bin/python" -c "import cellflow, jax; print('cellflow ok, jax', jax.__version__, jax.devices())"
