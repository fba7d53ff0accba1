import logging
import warnings

import matplotlib
import pytest

matplotlib.use("Agg")  # headless plots


@pytest.fixture(autouse=True)
def _quiet_lightning():
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        warnings.filterwarnings("ignore", message=".*smaller than the logging interval.*")
        yield


def make_screen(seed: int = 0, n_cells: int = 40, n_genes: int = 60, counts: bool = True):
    """Small synthetic screen with known effects: 2 cell lines; control, singles A, B, C and the double A+B.

    Genes are named ``g0``...; A, B and C are measured genes ``g0``, ``g1``, ``g2``. Each single scales its own block
    of 10 genes up (x4), the double scales both blocks and (non-additively) also a third block.
    """
    import numpy as np
    import pandas as pd
    from anndata import AnnData

    rng = np.random.default_rng(seed)
    names = [f"g{i}" for i in range(n_genes)]
    blocks = {"g0": slice(10, 20), "g1": slice(20, 30), "g2": slice(30, 40)}
    rows, obs = [], []
    for line, base_scale in (("L1", 1.0), ("L2", 1.5)):
        base = rng.gamma(2.0, 1.0, n_genes) * base_scale
        for cond in ("control", "g0", "g1", "g2", "g0+g1"):
            mu = base.copy()
            for gene in cond.split("+") if cond != "control" else []:
                mu[blocks[gene]] *= 4.0
            if cond == "g0+g1":
                mu[40:50] *= 3.0
            rows.append(rng.poisson(mu * rng.gamma(20.0, 1 / 20.0, (n_cells, 1))))
            obs += [(cond, line)] * n_cells
    X = np.vstack(rows).astype(np.float32)
    adata = AnnData(X, obs=pd.DataFrame(obs, columns=["condition", "line"], index=[f"c{i}" for i in range(len(X))]))
    adata.var_names = names
    if not counts:
        import scanpy as sc

        sc.pp.normalize_total(adata, target_sum=1e4)
        sc.pp.log1p(adata)
        adata.uns.pop("log1p", None)
    return adata


@pytest.fixture(scope="session")
def screen_factory():
    """The :func:`make_screen` builder."""
    return make_screen
