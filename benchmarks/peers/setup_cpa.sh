#!/usr/bin/env bash
# CPA (PyPI cpa-tools 0.8.1) in $PEER_ENVS/cpa. cpa-tools 0.8.1 pins torch<2 (pip then falls back to cpa-tools
# 0.1.0, which fails to build), so it is installed --no-deps over the dependencies it needs, with the CPU torch.
PEER=cpa
source "$(dirname "$0")/_venv.sh"
"${PIP[@]}" torch==2.13.0 scvi-tools==0.20.3 pytorch-lightning==1.9.5 "lightning==1.9.5" anndata==0.10.9 \
  scanpy==1.10.4 numpy==1.26.4 pandas==2.2.3 scipy==1.14.1 scikit-learn==1.5.2 "jax==0.4.30" "jaxlib==0.4.30" \
  "flax==0.8.5" "chex==0.1.86" "optax==0.2.3" "numpyro==0.15.3" "ml-collections==0.1.1" rdkit==2024.3.6 \
  seaborn adjustText tqdm
"$VENV/bin/pip" install --no-deps cpa-tools==0.8.1
"$VENV/bin/python" -c "import cpa, torch; print('cpa ok, torch', torch.__version__)"
