"""Data preparation of ``benchmarks/multiomics.py``: ECCITE-seq / multiome loading, gene selection, CLR, PCA, labels.

Every function is deterministic given its arguments (PCA and KMeans use ``random_state=0``), so the only sources of
seed-to-seed variation in the benchmark are the cross-validation folds and the trained models.
"""

from __future__ import annotations

import anndata as ad
import mudata as md
import numpy as np
import pandas as pd
import scanpy as sc
from scipy import sparse
from sklearn.cluster import KMeans
from sklearn.decomposition import PCA
from sklearn.metrics import silhouette_score

#: isotype-control antibodies of the ECCITE-seq panel: kept as prediction targets, left out of the cell labels.
ISOTYPE_CONTROLS = ("IgG1", "IgG2a")


def dense(X) -> np.ndarray:
    return np.asarray(X.toarray() if sparse.issparse(X) else X, dtype=np.float64)


def clr(counts) -> np.ndarray:
    """Per-cell centered log-ratio with pseudocount 1: ``clr(x)_j = log1p(x_j) - mean_k log1p(x_k)``.

    The mean runs over the proteins of one cell (rows), so it uses no other cell and cannot leak across folds.
    (muon's ``pt.pp.clr`` / Seurat's CLR compute ``log1p(x_j / exp(mean_k log1p(x_k)))`` and default to the
    per-protein axis; the form here is the textbook CLR of ``x + 1``.)
    """
    logx = np.log1p(np.clip(dense(counts), 0, None))
    return logx - logx.mean(1, keepdims=True)


def log_cp10k(counts) -> np.ndarray:
    """``log1p(counts / total * 1e4)`` per cell (cells with no counts stay 0)."""
    X = dense(counts)
    return np.log1p(X / np.maximum(X.sum(1, keepdims=True), 1.0) * 1e4)


def select_hvgs(rna: ad.AnnData, n_top: int = 2000, min_frac: float = 0.01) -> list[str]:
    """Genes detected (count > 0) in ``>= min_frac`` of the cells of ``rna``, then the ``n_top`` most variable.

    Highly variable genes: :func:`scanpy.pp.highly_variable_genes` (``flavor="seurat"``: normalized dispersion
    in 20 mean bins) on ``log1p`` CP10k of ``rna`` (raw counts in ``.X``). Returned in ``rna``'s gene order.
    """
    X = rna.X if sparse.issparse(rna.X) else sparse.csr_matrix(rna.X)
    keep = np.asarray((X > 0).mean(0)).ravel() >= min_frac
    sub = ad.AnnData(X[:, keep].astype(np.float32), var=pd.DataFrame(index=rna.var_names[keep]))
    sc.pp.normalize_total(sub, target_sum=1e4)
    sc.pp.log1p(sub)
    hv = sc.pp.highly_variable_genes(sub, n_top_genes=min(n_top, sub.n_vars), flavor="seurat", inplace=False)
    chosen = set(sub.var_names[hv["highly_variable"].to_numpy()])
    return [g for g in rna.var_names if g in chosen]


def pca_scores(train, test=None, n_comps: int = 50) -> tuple[np.ndarray, np.ndarray | None]:
    """PCA (centered, not scaled) fitted on ``train`` rows only; returns (train scores, test scores)."""
    train = dense(train)
    pca = PCA(n_components=min(n_comps, train.shape[0] - 1, train.shape[1]), random_state=0).fit(train)
    return pca.transform(train), None if test is None else pca.transform(dense(test))


# ---------------------------------------------------------------------------------------------------------- ECCITE-seq
def load_ecciteseq() -> dict:
    """Mimitou 2019 ECCITE-seq: RNA counts (gene symbols, ``hg19_`` prefix removed), ADT counts, CLR, hashtags."""
    import biojepa as bj

    mdata = bj.datasets.ecciteseq_mimitou2019()
    rna, adt = mdata["rna"], mdata["adt"]
    assert (rna.obs_names == adt.obs_names).all()
    symbols = (
        rna.var["gene_symbol"].astype(str) if "gene_symbol" in rna.var else rna.var_names.str.removeprefix("hg19_")
    )
    rna = ad.AnnData(
        sparse.csr_matrix(rna.X, dtype=np.float32),
        obs=pd.DataFrame(index=rna.obs_names),
        var=pd.DataFrame(index=pd.Index(symbols.to_numpy(), name=None)),
    )
    rna.var_names_make_unique()
    adt = ad.AnnData(
        dense(adt.X).astype(np.float32),
        obs=pd.DataFrame(index=adt.obs_names),
        var=pd.DataFrame(index=adt.var_names.astype(str)),
    )
    hashtag = mdata["hto"].obs["hto_max"].astype(str).reindex(rna.obs_names).to_numpy()
    return {"rna": rna, "adt": adt, "clr": clr(adt.X), "proteins": list(adt.var_names), "hashtag": hashtag}


def make_mudata(rna: ad.AnnData, adt: ad.AnnData | None = None, obs: pd.DataFrame | None = None) -> md.MuData:
    """MuData for the models: ``rna`` raw counts (``.X`` and layer ``counts``) and, if given, ``adt`` raw counts
    (``.X`` and layer ``counts``) plus its per-cell CLR (layer ``clr``). ``obs`` columns go to ``mdata.obs``."""
    r = ad.AnnData(
        sparse.csr_matrix(rna.X, dtype=np.float32),
        obs=pd.DataFrame(index=rna.obs_names),
        var=pd.DataFrame(index=rna.var_names),
    )
    r.layers["counts"] = r.X.copy()
    mods = {"rna": r}
    if adt is not None:
        p = ad.AnnData(
            dense(adt.X).astype(np.float32),
            obs=pd.DataFrame(index=adt.obs_names),
            var=pd.DataFrame(index=adt.var_names),
        )
        p.layers["counts"] = p.X.copy()
        p.layers["clr"] = clr(p.X).astype(np.float32)
        mods["adt"] = p
    mdata = md.MuData(mods)
    if obs is not None:
        for col in obs:
            mdata.obs[col] = obs[col].reindex(mdata.obs_names).to_numpy()
    return mdata


def protein_labels(
    clr_values: np.ndarray,
    proteins: list[str],
    resolution: float = 0.8,
    n_pcs: int = 20,
    n_neighbors: int = 15,
    min_size: int = 10,
) -> tuple[np.ndarray, str]:
    """Cell labels from the CLR protein profile (isotype controls removed), independent of any seed.

    PCA (``n_pcs``, unscaled CLR) → kNN graph (``n_neighbors``) → Leiden (``resolution``, igraph flavor,
    ``random_state=0``). Without ``igraph``: KMeans (``n_init=10``) on the same PCs with ``k`` in 4…12 chosen by
    the largest silhouette. Clusters with fewer than ``min_size`` cells are labelled ``"small"`` and left out of
    the latent scores by the caller. Returns (labels as strings ``"c0"``…, description of the method).
    """
    keep = [i for i, p in enumerate(proteins) if p not in ISOTYPE_CONTROLS]
    z, _ = pca_scores(clr_values[:, keep], n_comps=n_pcs)
    try:
        import igraph  # noqa: F401

        a = ad.AnnData(np.zeros((len(z), 1), np.float32))
        a.obsm["X_pca"] = z
        sc.pp.neighbors(a, n_neighbors=n_neighbors, use_rep="X_pca", random_state=0)
        sc.tl.leiden(a, resolution=resolution, flavor="igraph", n_iterations=2, directed=False, random_state=0)
        raw = a.obs["leiden"].astype(int).to_numpy()
        how = f"Leiden (igraph, resolution {resolution}) on a {n_neighbors}-NN graph of {n_pcs} protein PCs"
    except ImportError:
        best = max(range(4, 13), key=lambda k: silhouette_score(z, KMeans(k, n_init=10, random_state=0).fit_predict(z)))
        raw = KMeans(best, n_init=10, random_state=0).fit_predict(z)
        how = f"KMeans (k = {best}, best silhouette in 4…12; igraph missing, no Leiden) on {n_pcs} protein PCs"
    sizes = pd.Series(raw).value_counts()
    order = {c: i for i, c in enumerate(sizes.index)}  # c0 = largest cluster
    labels = np.array([f"c{order[c]}" if sizes[c] >= min_size else "small" for c in raw], dtype=object)
    return labels, how


def marker_table(clr_values: np.ndarray, proteins: list[str], labels: np.ndarray, top: int = 3) -> pd.DataFrame:
    """Per cluster: size and the ``top`` proteins with the largest mean CLR in the cluster minus the rest."""
    rows = []
    for lab in sorted(set(labels), key=lambda s: (s == "small", int(s[1:]) if s != "small" else 0)):
        inside = labels == lab
        diff = clr_values[inside].mean(0) - clr_values[~inside].mean(0)
        best = [i for i in np.argsort(-diff) if proteins[i] not in ISOTYPE_CONTROLS][:top]
        rows.append(
            {
                "cluster": lab,
                "cells": int(inside.sum()),
                f"top {top} proteins (Δ mean CLR)": ", ".join(f"{proteins[i]} ({diff[i]:+.2f})" for i in best),
            }
        )
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------------------------------------- multiome
def load_multiome() -> md.MuData:
    """Toy 10x multiome: ``rna`` (45 genes) and ``atac`` (174 peaks) raw counts in ``.X`` and layer ``counts``."""
    import biojepa as bj

    src = bj.datasets.multiome_pbmc_toy()
    mods = {}
    for name in ("rna", "atac"):
        a = ad.AnnData(
            sparse.csr_matrix(src[name].X, dtype=np.float32),
            obs=pd.DataFrame(index=src[name].obs_names),
            var=pd.DataFrame(index=src[name].var_names.astype(str)),
        )
        a.layers["counts"] = a.X.copy()
        mods[name] = a
    return md.MuData(mods)
