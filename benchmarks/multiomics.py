"""Multi-omics benchmark: protein from RNA and joint latents on ECCITE-seq (BioJEPA vs TOTALVI and baselines).

Data: Mimitou et al. 2019 ECCITE-seq PBMCs (``bj.datasets.ecciteseq_mimitou2019()``): 500 cells, RNA (19,521 genes,
raw counts; the ``hg19_`` prefix is dropped from the gene symbols), 49 surface proteins (ADT, raw counts, including
the isotype controls IgG1 and IgG2a) and 4 hashtags (not used). Preprocessing (``benchmarks/_multiomics_data.py``):

- RNA: genes detected (count > 0) in ≥ 1 % of the cells, then the 2,000 highly variable genes of
  ``scanpy.pp.highly_variable_genes(flavor="seurat")`` on log1p-CP10k. In the protein task they are selected on the
  training cells of each fold only; in the latent task (unsupervised, every cell embedded) on all 500 cells. Models
  (TOTALVI, BioJEPA) get the raw counts of these genes; the baselines get ``log1p(counts / total · 1e4)``.
- Protein: per-cell CLR with pseudocount 1, ``clr(x)_j = log1p(x_j) − mean_k log1p(x_k)`` over the 49 proteins of
  the cell (numpy; no information from other cells, so no fold leakage).

Task 1, protein from RNA (``protein``): 5-fold cross-validation over cells (``KFold(shuffle=True,
random_state=seed)``), seeds 0, 1, 2. Every method is fitted on the training fold (RNA and protein) and predicts
the CLR protein of the held-out cells from their RNA alone. Metrics, on the held-out cells of a fold: per-protein
Pearson r between predicted and observed CLR (r := 0 for a constant prediction), summarized over the 49 proteins
as ``pearson_mean``, ``pearson_median`` and ``frac_r>0.5``, plus ``r2_mean`` (per-protein 1 − SSE / SS around the
held-out mean, averaged; 0 ≈ predicting the held-out mean; unlike r it penalizes predictions on the wrong scale,
e.g. the CLR of TOTALVI's denoised rates). Mean over the 5 folds, then mean ± sd over seeds.

- ``kNN``: ``KNeighborsRegressor(k=15, weights="distance")`` on the RNA PCA (50 PCs of log1p-CP10k of the fold's
  HVGs, centered not scaled, PCA fitted on the training fold only; held-out cells are projected).
- ``Ridge``: ``RidgeCV(alphas=10^-2…10^6, 17 values, alpha_per_target=True)`` (efficient leave-one-out on the
  training fold) on the same PCA scores.
- ``TrainMean``: the training-fold mean CLR of each protein for every cell (a floor: r = 0, R² ≤ 0).
- ``TOTALVI`` (only with ``--totalvi-impute``): TOTALVI on the fold's HVG counts of all cells with the held-out
  cells' proteins set to zero in a second batch (TOTALVI's missing-protein mode; transductive: it sees the
  held-out RNA, never their protein); prediction = foreground + background protein rate of the held-out cells
  under the training batch (25 posterior samples), then CLR.
- ``BioJEPA``: when ``bj.BioJEPA`` has ``setup_mudata``: ``biojepa_predict_protein(train_mdata, test_rna)`` below
  (``setup_mudata`` with modalities rna + adt on the training fold, ``predict_modality(test_rna,
  target="protein")``), skipped with a note otherwise.

Task 2, latent quality (``latent``): cell labels come from the data: clusters of the CLR protein profile
(isotype controls removed; 20 PCs → 15-NN graph → Leiden resolution 0.8, or KMeans with k chosen by silhouette in
4…12 when igraph is missing; clusters < 10 cells left out), named by their top-3 marker proteins (printed). Metrics
on every latent: 5-fold stratified kNN accuracy (k = 15, ``bj.metrics.knn_accuracy``, folds seeded), silhouette
(``bj.metrics.silhouette``) and effective rank; mean ± sd over seeds. Latents: ``TOTALVI`` (``setup_mudata`` on
HVG counts, rna + adt, default model, ``max_epochs=--epochs`` with its default early stopping), ``PCA(RNA)`` (50
PCs of log1p-CP10k HVGs), ``PCA(protein)`` (20 PCs of the CLR — the very space the labels were clustered in, so a
near-ceiling reference, not a competitor) and ``BioJEPA`` (``biojepa_latent(mdata)``, joint RNA + protein latent,
same epoch budget as TOTALVI). The labels are protein clusters, so protein-aware latents have an advantage;
``PCA(RNA)`` shows what RNA alone recovers.

``--multiome-smoke``: the toy 10x multiome (``bj.datasets.multiome_pbmc_toy()``, 1,000 cells, 45 genes, 174
peaks), one 80/20 split of cells per seed. ATAC is predicted from RNA and scored by the mean per-peak Pearson r
against log1p-CP10k ATAC of the held-out cells (peaks constant there are skipped): ``kNN`` (k = 15 on the 20-PC
PCA of log1p-CP10k RNA fitted on the training cells) vs BioJEPA (``setup_mudata`` with modalities rna + atac,
``--smoke-epochs`` epochs, latent of the training cells, ``predict_modality(test_rna, target="atac")``, which
returns log1p-CP10k values). An end-to-end check, not a benchmark (45 genes).

Run ``python benchmarks/multiomics.py --seeds 0 1 2 --epochs 200 --multiome-smoke
--out benchmarks/results/multiomics.md`` (one command). Without BioJEPA about 2 minutes on 1 core (TOTALVI latent
≈ 40 s per seed at 200 epochs); ``--totalvi-impute`` adds 5 TOTALVI fits per seed (≈ 10 more minutes). Quick
check: ``--seeds 0 --epochs 20 --threads 1 --totalvi-impute --multiome-smoke --out /tmp/multiomics.md`` (≈ 30 s).
Writes the markdown report to ``--out``, the raw rows (one per seed × fold × method) next to it as ``.csv``, and
per-protein Pearson r as ``*_per_protein.csv``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import time
from pathlib import Path

import anndata as ad
import mudata as md
import numpy as np
import pandas as pd
import scvi
import torch
from sklearn.linear_model import RidgeCV
from sklearn.model_selection import KFold
from sklearn.neighbors import KNeighborsRegressor

import biojepa as bj
from biojepa.metrics import effective_rank, knn_accuracy, silhouette

sys.path.insert(0, str(Path(__file__).parent))
from _common import cpu_model, quiet
from _multiomics_data import (
    ISOTYPE_CONTROLS,
    clr,
    dense,
    load_ecciteseq,
    load_multiome,
    log_cp10k,
    make_mudata,
    marker_table,
    pca_scores,
    protein_labels,
    select_hvgs,
)

SEEDS = (0, 1, 2)
N_FOLDS, N_HVG, N_PCS, K = 5, 2000, 50, 15
RIDGE_ALPHAS = np.logspace(-2, 6, 17)
PROTEIN_METHODS = ("kNN", "Ridge", "TrainMean", "TOTALVI", "BioJEPA")
LATENT_METHODS = ("PCA(RNA)", "PCA(protein)", "TOTALVI", "BioJEPA")
PROTEIN_METRICS = ("pearson_mean", "pearson_median", "frac_r>0.5", "r2_mean")
LATENT_METRICS = ("knn_accuracy", "silhouette", "effective_rank")
SMOKE_METRICS = ("peak_pearson_mean",)
MODALITIES_PROTEIN = {"rna_layer": "rna", "protein_layer": "adt"}
MODALITIES_ATAC = {"rna_layer": "rna", "atac_layer": "atac"}


# ---------------------------------------------------------------------------------------------------------- BioJEPA arm
def biojepa_available() -> bool:
    """The multi-omic API (``BioJEPA.setup_mudata``) exists in the installed biojepa."""
    return hasattr(bj.BioJEPA, "setup_mudata")


def _as_matrix(pred, columns: pd.Index, n_rows: int) -> np.ndarray:
    """Predictions (AnnData / DataFrame / array / tensor) as a dense (cells × ``columns``) float array."""
    if isinstance(pred, md.MuData):
        raise TypeError("predict_modality returned a MuData; expected one modality")
    if isinstance(pred, ad.AnnData):
        pred = pd.DataFrame(dense(pred.X), columns=pred.var_names)
    if isinstance(pred, pd.DataFrame):
        pred = pred.reindex(columns=columns) if set(columns) <= set(pred.columns) else pred
        pred = pred.to_numpy()
    if isinstance(pred, torch.Tensor):
        pred = pred.detach().cpu().numpy()
    pred = np.asarray(pred, dtype=np.float64)
    if pred.shape != (n_rows, len(columns)):
        raise ValueError(f"prediction has shape {pred.shape}, expected {(n_rows, len(columns))}")
    return pred


def _fit_biojepa(mdata: md.MuData, modalities: dict, layers: dict, seed: int, epochs: int, model_kwargs: dict):
    scvi.settings.seed = seed
    bj.BioJEPA.setup_mudata(mdata, modalities=modalities, **layers)
    model = bj.BioJEPA(mdata, **model_kwargs)
    model.train(max_epochs=epochs, enable_progress_bar=False)
    return model


def biojepa_predict_protein(
    train: md.MuData,
    test_rna: ad.AnnData,
    seed: int,
    epochs: int,
    protein_layer: str = "counts",
    model_kwargs: dict | None = None,
) -> np.ndarray:
    """BioJEPA arm of the protein task: fit on ``train``, predict CLR protein of the cells of ``test_rna``.

    ``train``: MuData with ``rna`` (raw counts of the fold's HVGs in ``.X``) and ``adt`` (raw counts in ``.X``,
    per-cell CLR in layer ``"clr"``); ``test_rna``: AnnData, raw counts of the same genes in ``.X``, no protein.
    Returns a (``test_rna.n_obs`` × 49) array of CLR values, columns in ``train["adt"].var_names`` order.
    """
    # predict_modality returns the model's normalized protein scale: the per-cell CLR of counts ("counts"), or
    # the registered CLR layer itself ("clr"); either way the values are compared with the observed CLR as they are.
    layer = None if protein_layer == "counts" else "clr"
    model = _fit_biojepa(
        train, MODALITIES_PROTEIN, {"rna_layer": None, "protein_layer": layer}, seed, epochs, model_kwargs or {}
    )
    return _as_matrix(model.predict_modality(test_rna, target="protein"), train["adt"].var_names, test_rna.n_obs)


def biojepa_latent(
    mdata: md.MuData, seed: int, epochs: int, protein_layer: str = "counts", model_kwargs: dict | None = None
) -> np.ndarray:
    """BioJEPA arm of the latent task: joint RNA + protein latent (cells × n_latent) of every cell of ``mdata``.

    ``mdata`` as in :func:`biojepa_predict_protein` (``rna`` HVG counts, ``adt`` counts + layer ``"clr"``).
    """
    layer = None if protein_layer == "counts" else "clr"
    model = _fit_biojepa(
        mdata, MODALITIES_PROTEIN, {"rna_layer": None, "protein_layer": layer}, seed, epochs, model_kwargs or {}
    )
    z = model.get_latent_representation(mdata, key_added="X_biojepa")
    return np.asarray(mdata.obsm["X_biojepa"] if z is None else z, dtype=np.float64)


# ---------------------------------------------------------------------------------------------------------- TOTALVI
def _train_totalvi(mdata: md.MuData, seed: int, epochs: int, batch_key: str | None = None):
    scvi.settings.seed = seed
    scvi.model.TOTALVI.setup_mudata(
        mdata, rna_layer=None, protein_layer=None, batch_key=batch_key, modalities=MODALITIES_PROTEIN
    )
    model = scvi.model.TOTALVI(mdata)
    model.train(max_epochs=epochs, enable_progress_bar=False)
    return model


def totalvi_latent(mdata: md.MuData, seed: int, epochs: int) -> tuple[np.ndarray, int]:
    model = _train_totalvi(mdata, seed, epochs)
    return model.get_latent_representation(), len(model.history["elbo_train"])


def totalvi_impute(rna: ad.AnnData, adt: ad.AnnData, tr: np.ndarray, te: np.ndarray, seed: int, epochs: int):
    """TOTALVI on all cells, held-out proteins zeroed in batch ``test`` (treated as missing); CLR of the imputed."""
    adt = adt.copy()
    adt.X = dense(adt.X).astype(np.float32)
    adt.X[te] = 0.0
    split = pd.Series("train", index=rna.obs_names)
    split.iloc[te] = "test"
    mdata = make_mudata(rna, adt, obs=pd.DataFrame({"split": split}))
    model = _train_totalvi(mdata, seed, epochs, batch_key="split")
    _, prot = model.get_normalized_expression(
        mdata,
        indices=te,
        transform_batch="train",
        n_samples=25,
        include_protein_background=True,
        return_mean=True,
        return_numpy=True,
    )
    return clr(prot), len(model.history["elbo_train"])


# ---------------------------------------------------------------------------------------------------------- scoring
def column_pearson(pred: np.ndarray, obs: np.ndarray) -> np.ndarray:
    """Pearson r of each column of ``pred`` with the same column of ``obs``; 0 where either is constant."""
    p, o = pred - pred.mean(0), obs - obs.mean(0)
    ok = (np.ptp(pred, 0) > 0) & (np.ptp(obs, 0) > 0)
    den = np.sqrt((p**2).sum(0) * (o**2).sum(0))
    return np.where(ok, (p * o).sum(0) / np.where(ok, den, 1.0), 0.0)


def protein_scores(pred: np.ndarray, obs: np.ndarray) -> tuple[dict, np.ndarray]:
    r = column_pearson(pred, obs)
    ss = ((obs - obs.mean(0)) ** 2).sum(0)
    r2 = 1.0 - ((pred - obs) ** 2).sum(0) / np.where(ss > 0, ss, np.nan)
    scores = {
        "pearson_mean": r.mean(),
        "pearson_median": np.median(r),
        "frac_r>0.5": (r > 0.5).mean(),
        "r2_mean": np.nanmean(r2),
    }
    return {k: float(v) for k, v in scores.items()}, r


# ---------------------------------------------------------------------------------------------------------- task 1
def protein_task(data: dict, seed: int, args, notes: list[str]) -> tuple[list[dict], list[dict]]:
    """5-fold CV of protein-from-RNA for one seed; returns (rows per fold and method, per-protein r rows)."""
    rna, adt, Y = data["rna"], data["adt"], data["clr"]
    rows, per_protein = [], []
    for fold, (tr, te) in enumerate(KFold(N_FOLDS, shuffle=True, random_state=seed).split(Y)):
        genes = select_hvgs(rna[tr], N_HVG)
        rna_f = rna[:, genes].copy()
        Ztr, Zte = pca_scores(log_cp10k(rna_f.X[tr]), log_cp10k(rna_f.X[te]), N_PCS)
        for method in args.methods:
            if method not in PROTEIN_METHODS or (method == "TOTALVI" and not args.totalvi_impute):
                continue
            start, extra = time.perf_counter(), {}
            if method == "kNN":
                pred = KNeighborsRegressor(K, weights="distance").fit(Ztr, Y[tr]).predict(Zte)
            elif method == "Ridge":
                ridge = RidgeCV(alphas=RIDGE_ALPHAS, alpha_per_target=True).fit(Ztr, Y[tr])
                pred = ridge.predict(Zte)
                extra["ridge_alpha_median"] = float(np.median(ridge.alpha_))
            elif method == "TrainMean":
                pred = np.broadcast_to(Y[tr].mean(0), (len(te), Y.shape[1]))
            elif method == "TOTALVI":
                pred, extra["epochs_run"] = totalvi_impute(rna_f, adt, tr, te, seed, args.epochs)
            else:  # BioJEPA
                if not biojepa_available():
                    _note(notes, "BioJEPA skipped in the protein task: bj.BioJEPA has no setup_mudata yet.")
                    continue
                train = make_mudata(rna_f[tr], adt[tr])
                pred = biojepa_predict_protein(
                    train, rna_f[te].copy(), seed, args.epochs, args.biojepa_protein_layer, args.model_kwargs
                )
            seconds = time.perf_counter() - start
            scores, r = protein_scores(np.asarray(pred, dtype=np.float64), Y[te])
            rows.append(
                {"task": "protein", "seed": seed, "fold": fold, "method": method, **scores, "seconds": seconds, **extra}
            )
            per_protein += [
                {"seed": seed, "fold": fold, "method": method, "protein": p, "pearson": float(v)}
                for p, v in zip(data["proteins"], r, strict=True)
            ]
        fold_rows = pd.DataFrame([r for r in rows if r["fold"] == fold])
        print(
            f"seed {seed} fold {fold}: {len(genes)} HVGs\n"
            + fold_rows[["method", *PROTEIN_METRICS, "seconds"]].round(3).to_string(index=False),
            flush=True,
        )
    return rows, per_protein


# ---------------------------------------------------------------------------------------------------------- task 2
def latent_task(data: dict, labels: np.ndarray, genes: list[str], seed: int, args, notes: list[str]) -> list[dict]:
    """Embed every cell with each latent method and score the protein-cluster labels on it."""
    keep = labels != "small"
    proteins = [i for i, p in enumerate(data["proteins"]) if p not in ISOTYPE_CONTROLS]
    rna = data["rna"][:, genes].copy()
    rows = []
    for method in args.methods:
        if method not in LATENT_METHODS:
            continue
        start, extra = time.perf_counter(), {}
        if method == "PCA(RNA)":
            z, _ = pca_scores(log_cp10k(rna.X), n_comps=N_PCS)
        elif method == "PCA(protein)":
            z, _ = pca_scores(data["clr"][:, proteins], n_comps=20)
        elif method == "TOTALVI":
            z, extra["epochs_run"] = totalvi_latent(make_mudata(rna, data["adt"]), seed, args.epochs)
        else:  # BioJEPA
            if not biojepa_available():
                _note(notes, "BioJEPA skipped in the latent task: bj.BioJEPA has no setup_mudata yet.")
                continue
            z = biojepa_latent(
                make_mudata(rna, data["adt"]), seed, args.epochs, args.biojepa_protein_layer, args.model_kwargs
            )
        seconds = time.perf_counter() - start
        z = np.asarray(z, dtype=np.float64)[keep]
        rows.append(
            {
                "task": "latent",
                "seed": seed,
                "method": method,
                "knn_accuracy": knn_accuracy(z, labels[keep], n_neighbors=K, n_folds=N_FOLDS, seed=seed),
                "silhouette": silhouette(z, labels[keep]),
                "effective_rank": effective_rank(z),
                "dims": z.shape[1],
                "seconds": seconds,
                **extra,
            }
        )
    print(pd.DataFrame(rows).round(3).to_string(index=False), flush=True)
    return rows


# ---------------------------------------------------------------------------------------------------------- smoke
def multiome_smoke(seed: int, args, notes: list[str]) -> list[dict]:
    """Predict ATAC from RNA on the toy multiome (one 80/20 split): kNN vs BioJEPA (when it has setup_mudata)."""
    mdata = load_multiome()
    rna, atac = mdata["rna"], mdata["atac"]
    perm = np.random.default_rng(seed).permutation(mdata.n_obs)
    te, tr = np.sort(perm[: mdata.n_obs // 5]), np.sort(perm[mdata.n_obs // 5 :])
    Y = log_cp10k(atac.X)  # the scale predict_modality returns for ATAC counts
    varying = Y[te].std(0) > 0
    Ztr, Zte = pca_scores(log_cp10k(rna.X[tr]), log_cp10k(rna.X[te]), 20)
    rows = []

    def add(method, pred, seconds, **extra):
        r = column_pearson(np.asarray(pred, dtype=np.float64)[:, varying], Y[te][:, varying])
        rows.append(
            {
                "task": "multiome_smoke",
                "seed": seed,
                "method": method,
                "peak_pearson_mean": float(r.mean()),
                "peaks_scored": int(varying.sum()),
                "seconds": seconds,
                **extra,
            }
        )

    start = time.perf_counter()
    add("kNN", KNeighborsRegressor(K, weights="distance").fit(Ztr, Y[tr]).predict(Zte), time.perf_counter() - start)
    add("TrainMean", np.broadcast_to(Y[tr].mean(0), (len(te), Y.shape[1])), 0.0)
    if "BioJEPA" not in args.methods:
        pass
    elif not biojepa_available():
        _note(notes, "BioJEPA skipped in the multiome smoke test: bj.BioJEPA has no setup_mudata yet.")
    else:
        start = time.perf_counter()
        train = mdata[tr].copy()
        model = _fit_biojepa(
            train, MODALITIES_ATAC, {"rna_layer": None, "atac_layer": None}, seed, args.smoke_epochs, args.model_kwargs
        )
        z = model.get_latent_representation(train, key_added="X_biojepa")
        z = np.asarray(train.obsm["X_biojepa"] if z is None else z)
        assert z.shape[0] == train.n_obs and np.isfinite(z).all(), f"bad latent {z.shape}"
        test_rna = rna[te].copy()
        pred = _as_matrix(model.predict_modality(test_rna, target="atac"), atac.var_names, len(te))
        add("BioJEPA", pred, time.perf_counter() - start, latent_dim=z.shape[1])
    print(pd.DataFrame(rows).round(3).to_string(index=False), flush=True)
    return rows


# ---------------------------------------------------------------------------------------------------------- report
def _note(notes: list[str], text: str) -> None:
    if text not in notes:
        notes.append(text)
        print(text, flush=True)


def summarize(df: pd.DataFrame, metrics: tuple[str, ...]) -> str:
    """Mean over folds per (method, seed), then mean ± sd over seeds (sd "–" for one seed)."""
    per_seed = df.groupby(["method", "seed"], sort=False)[[*metrics, "seconds"]].mean()
    cols = [*metrics, "seconds"]
    lines = ["| method | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for method, d in per_seed.groupby(level="method", sort=False):
        cells = []
        for c in cols:
            v = d[c].dropna()
            sd = f"{v.std(ddof=1):.3f}" if len(v) > 1 else "–"
            cells.append("n/a" if v.empty else f"{v.mean():.3f} ± {sd}")
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS))
    parser.add_argument("--epochs", type=int, default=200, help="max epochs of TOTALVI and BioJEPA (same budget)")
    parser.add_argument("--tasks", nargs="*", default=["protein", "latent"], choices=["protein", "latent"])
    parser.add_argument(
        "--methods",
        nargs="+",
        default=[*PROTEIN_METHODS, *LATENT_METHODS[:2]],
        help=f"any of {sorted(set(PROTEIN_METHODS + LATENT_METHODS))}; BioJEPA runs only when "
        "bj.BioJEPA has setup_mudata",
    )
    parser.add_argument("--totalvi-impute", action="store_true", help="add TOTALVI to the protein task (slow)")
    parser.add_argument(
        "--biojepa-protein-layer",
        choices=["counts", "clr"],
        default="counts",
        help="protein scale given to BioJEPA.setup_mudata (see the TODO in biojepa_predict_protein)",
    )
    parser.add_argument("--multiome-smoke", action="store_true", help="also run the toy RNA + ATAC smoke test")
    parser.add_argument("--smoke-epochs", type=int, default=5)
    parser.add_argument("--label-resolution", type=float, default=0.8, help="Leiden resolution of the labels")
    parser.add_argument("--model-kwargs", type=json.loads, default={}, help="BioJEPA kwargs, e.g. '{\"n_latent\": 32}'")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/multiomics.md"))
    args = parser.parse_args(argv)
    quiet()
    if args.threads:
        torch.set_num_threads(args.threads)
    start = time.perf_counter()
    notes: list[str] = []
    rows, per_protein, latent_rows, smoke_rows, text_parts = [], [], [], [], []

    if args.tasks:
        data = load_ecciteseq()
        print(f"ECCITE-seq: {data['rna'].n_obs} cells, {data['rna'].n_vars} genes, {len(data['proteins'])} proteins")
    if "protein" in args.tasks:
        for seed in args.seeds:
            r, p = protein_task(data, seed, args, notes)
            rows += r
            per_protein += p
        df = pd.DataFrame(rows)
        alpha = df["ridge_alpha_median"].median() if "ridge_alpha_median" in df else np.nan
        pp = pd.DataFrame(per_protein).groupby(["protein", "method"], sort=False)["pearson"].mean().unstack()
        pp = pp.loc[:, [m for m in args.methods if m in pp.columns]]
        pp = pp.sort_values(pp.columns[0], ascending=False)
        text_parts += [
            "## Protein from RNA (5-fold CV over cells)",
            "",
            f"Per-protein Pearson r / R² of CLR protein on held-out cells, 49 proteins; mean over "
            f"{N_FOLDS} folds, mean ± sd over seeds {args.seeds}; `seconds`: fit + predict of one fold."
            + (f" Ridge alpha (median over proteins, then over folds): {alpha:.3g}." if alpha == alpha else ""),
            "",
            summarize(df, PROTEIN_METRICS),
            "",
            "<details><summary>Per-protein Pearson r (mean over folds and seeds)</summary>",
            "",
            pp.round(3).to_markdown(),
            "",
            "</details>",
            "",
        ]
    if "latent" in args.tasks:
        labels, how = protein_labels(data["clr"], data["proteins"], resolution=args.label_resolution)
        markers = marker_table(data["clr"], data["proteins"], labels)
        print(f"Labels: {how}\n{markers.to_string(index=False)}", flush=True)
        genes = select_hvgs(data["rna"], N_HVG)
        for seed in args.seeds:
            latent_rows += latent_task(data, labels, genes, seed, args, notes)
        n_kept = int((labels != "small").sum())
        text_parts += [
            "## Latent quality (protein-cluster labels)",
            "",
            f"Labels: {how}; {n_kept} of {len(labels)} cells in clusters ≥ 10 cells. Latents of all "
            f"cells ({len(genes)} HVGs selected on all cells); kNN accuracy (k = {K}, {N_FOLDS}-fold), "
            f"silhouette, effective rank; mean ± sd over seeds {args.seeds}. Labels come from protein "
            "clusters: protein-aware latents are favoured and PCA(protein) is the labels' own space.",
            "",
            markers.to_markdown(index=False),
            "",
            summarize(pd.DataFrame(latent_rows), LATENT_METRICS),
            "",
        ]
    if args.multiome_smoke:
        for seed in args.seeds:
            smoke_rows += multiome_smoke(seed, args, notes)
        text_parts += [
            "## Multiome smoke test (toy RNA + ATAC, ATAC from RNA)",
            "",
            f"Mean per-peak Pearson r vs log1p-CP10k ATAC of 200 held-out cells; BioJEPA {args.smoke_epochs} epochs.",
            "",
            summarize(pd.DataFrame(smoke_rows), SMOKE_METRICS),
            "",
        ]

    cmd = "python benchmarks/multiomics.py " + " ".join(sys.argv[1:] if argv is None else argv)
    header = [
        f"# Multi-omics benchmark ({datetime.date.today()})",
        "",
        f"`{cmd}`",
        "",
        f"Seeds {args.seeds}; {args.epochs} max epochs (TOTALVI, BioJEPA); {cpu_model()}, "
        f"{torch.get_num_threads()} torch threads; scvi-tools {scvi.__version__}, biojepa {bj.__version__}; "
        f"{time.perf_counter() - start:.0f} s.",
        "",
    ]
    if notes:
        header += [*(f"- {n}" for n in notes), ""]
    text = "\n".join(header + text_parts)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    raw = pd.concat([pd.DataFrame(x) for x in (rows, latent_rows, smoke_rows) if x], ignore_index=True)
    if "fold" in raw:
        raw["fold"] = raw["fold"].astype("Int64")
    raw.to_csv(args.out.with_suffix(".csv"), index=False)
    if per_protein:
        pd.DataFrame(per_protein).to_csv(args.out.with_name(args.out.stem + "_per_protein.csv"), index=False)
    print(text)


if __name__ == "__main__":
    main()
