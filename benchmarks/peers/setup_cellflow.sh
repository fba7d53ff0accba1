#!/usr/bin/env bash
# CellFlow (PyPI cellflow-tools 0.0.9, JAX) in $PEER_ENVS/cellflow; CPU jax. cellflow imports requests without declaring it.
# The JAX stack is pinned to the versions the runner was tested with (cellflow-tools 0.0.9 leaves it unpinned).
PEER=cellflow
source "$(dirname "$0")/_venv.sh"
"${PIP[@]}" cellflow-tools==0.0.9 requests==2.32.3 jax==0.10.2 jaxlib==0.10.2 flax==0.12.8 ott-jax==0.6.0 \
    optax==0.2.8 diffrax==0.7.2 equinox==0.13.8 anndata==0.12.19 scanpy==1.11.5 dask==2026.11.0
"$VENV/bin/python" -c "import cellflow, jax; print('cellflow ok, jax', jax.__version__, jax.devices())"
