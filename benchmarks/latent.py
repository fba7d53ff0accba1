"""What the encoder learns: BioJEPA latent variants vs SCVI and PCA on five labelled sets, one script, fixed seeds.

Sets (all real except the simulated screen):

- ``kang``: Kang 2018 PBMCs (raw counts), label ``cluster_id`` (5 cell types);
- ``k562``: PerturBench devel, Norman 2019 K562 cells only (log-normalized), label ``condition`` (34 conditions);
  plus the *readout* score: a ridge decoder from the latent to expression, fitted on every K562 cell, reads the
  observed latent shift of each single (mean latent of its cells − mean latent of control cells); Pearson r with the
  observed expression change on its top-20 changed genes, averaged over singles;
- ``sergio``: sergio-rs simulated knockout screen (counts), label ``perturbation`` (31 conditions);
- ``hsmm``: HSMM myoblasts, 2,000 most variable genes of log1p FPKM, label ``time_hours``;
- ``eccite``: ECCITE-seq RNA (2,000 most variable genes, raw counts): protein (CLR) from the RNA-only latent by
  ridge regression (5-fold) on the latent's z-scored columns, mean per-protein Pearson r. Z-scoring understates
  PCA, whose ridge on raw PC scores is 0.04 higher; ``eccite_readout.py`` scores both readouts.

Methods: BioJEPA configurations (``CONFIGS``: token granularity, masking, gene dropout, latent width, pooling,
EMA, learning rate, training length, expression readout), SCVI (same epochs, default settings; on ``k562`` and
``hsmm``, whose files hold no counts, SCVI reads rounded ``expm1(X) * library / 1e4`` and FPKM) and PCA (50 PCs of
the log-normalized data). kNN: 15-NN accuracy under stratified 5-fold CV; silhouette of the labels.

Every (set, method, seed) runs as its own process (``--workers`` at a time, one thread each), so the table does not
depend on how many run at once; times are not compared here (see ``benchmarks/speed.py``).

Run ``python benchmarks/latent.py --out benchmarks/results/latent.csv`` (``--sets``, ``--configs`` and ``--seeds``
restrict the grid; ``--accelerator gpu`` trains on a GPU).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

SEEDS = (0, 1, 2)
EPOCHS = {"kang": 100, "k562": 50, "sergio": 25, "hsmm": 200, "eccite": 200}
EPOCHS |= {"shared:kang": 100, "shared:eccite": 200, "shared:hsmm": 200, "pool": 100}
#: name → (model kwargs, train kwargs); "base" is the default of the released model: with the negative-binomial
#: count readout on counts since it became the default (rows written before then are the pure JEPA objective, which
#: is "pure_jepa" now), scoring 512 random genes per step since that became the default (the "nb_*" rows score every
#: gene). Every other variant changes one thing from the pure JEPA objective or from its squared-error readout
#: ("mse"), as when it was first run, except the "nb_*" ones.
CONFIGS = {
    "base": ({}, {}),
    "pure_jepa": ({"readout_weight": 0.0}, {}),
    "modules64": ({"readout_weight": 0.0, "n_modules": 64}, {}),
    "modules128": ({"readout_weight": 0.0, "n_modules": 128}, {}),
    "gene_tokens": ({"readout_weight": 0.0, "n_modules": -1}, {}),  # one token per gene
    "gene_dropout": ({"readout_weight": 0.0, "gene_dropout": 0.25}, {}),
    "mask_high": ({"readout_weight": 0.0, "mask_ratio": (0.5, 0.75)}, {}),
    "latent64": ({"readout_weight": 0.0, "n_latent": 64}, {}),
    "latent128": ({"readout_weight": 0.0, "n_latent": 128}, {}),
    "cls": ({"readout_weight": 0.0, "pooling": "cls"}, {}),
    "mean+cls": ({"readout_weight": 0.0, "pooling": "both"}, {}),
    "ema_0.99": ({"readout_weight": 0.0}, {"plan_kwargs": {"ema_momentum": (0.99, 1.0)}}),
    "lr_3e-3": ({"readout_weight": 0.0}, {"plan_kwargs": {"lr": 3e-3}}),
    "epochs_x2": ({"readout_weight": 0.0}, {"epochs_factor": 2}),
    "readout_1": ({"readout_weight": 1.0, "readout_likelihood": "mse"}, {}),
    "readout_10": ({"readout_weight": 10.0, "readout_likelihood": "mse"}, {}),
    "modules64+readout_10": ({"n_modules": 64, "readout_weight": 10.0, "readout_likelihood": "mse"}, {}),
    "combined": ({"n_latent": 64, "gene_dropout": 0.25, "readout_weight": 10.0, "readout_likelihood": "mse"}, {}),
    "combined+cls": (
        {"n_latent": 64, "gene_dropout": 0.25, "readout_weight": 10.0, "pooling": "both", "readout_likelihood": "mse"},
        {},
    ),
    "combined_x2": (
        {"n_latent": 64, "gene_dropout": 0.25, "readout_weight": 10.0, "readout_likelihood": "mse"},
        {"epochs_factor": 2},
    ),
    "modules128+combined": (
        {"n_modules": 128, "n_latent": 64, "gene_dropout": 0.25, "readout_weight": 10.0, "readout_likelihood": "mse"},
        {},
    ),
    "nb_50": ({"readout_weight": 50.0, "readout_likelihood": "nb", "readout_genes": None}, {}),
    "nb_200": ({"readout_weight": 200.0, "readout_likelihood": "nb", "readout_genes": None}, {}),
    "nb_1000": ({"readout_weight": 1000.0, "readout_likelihood": "nb", "readout_genes": None}, {}),
    "nb_3000": ({"readout_weight": 3000.0, "readout_likelihood": "nb", "readout_genes": None}, {}),
    "nb_3000_genes512": ({"readout_weight": 3000.0, "readout_likelihood": "nb", "readout_genes": 512}, {}),
    "nb_3000_genes256": ({"readout_weight": 3000.0, "readout_likelihood": "nb", "readout_genes": 256}, {}),
    "nb_1000_no_jepa": (
        {"readout_weight": 1000.0, "readout_likelihood": "nb", "jepa_weight": 0.0, "readout_genes": None},
        {},
    ),
    "nb_200+gene_dropout": (
        {"readout_weight": 200.0, "readout_likelihood": "nb", "gene_dropout": 0.25, "readout_genes": None},
        {},
    ),
    # the squared-error readout of standardized log expression at the weights that made the count readout win
    "mse_100": ({"readout_weight": 100.0, "readout_likelihood": "mse"}, {}),
    "mse_300": ({"readout_weight": 300.0, "readout_likelihood": "mse"}, {}),
    "mse_1000": ({"readout_weight": 1000.0, "readout_likelihood": "mse"}, {}),
    # the same regression on log expression's own scale: each gene's squared error weighted by its variance
    "mse_log_100": ({"readout_weight": 100.0, "readout_likelihood": "mse_log"}, {}),
    "mse_log_1000": ({"readout_weight": 1000.0, "readout_likelihood": "mse_log"}, {}),
    "mse_log_3000": ({"readout_weight": 3000.0, "readout_likelihood": "mse_log"}, {}),
    "mse_log_10000": ({"readout_weight": 10000.0, "readout_likelihood": "mse_log"}, {}),
    "blocks1": ({"readout_weight": 0.0, "mask_blocks": 1}, {}),
    "blocks2": ({"readout_weight": 0.0, "mask_blocks": 2}, {}),
    "modules64+blocks4": ({"readout_weight": 0.0, "n_modules": 64, "mask_blocks": 4}, {}),
    "combined+blocks2": (
        {"n_latent": 64, "gene_dropout": 0.25, "readout_weight": 10.0, "mask_blocks": 2, "readout_likelihood": "mse"},
        {},
    ),
}
HEAVY_SETS = ("k562", "sergio")
HEAVY_CONFIGS = ("modules128", "gene_tokens", "epochs_x2", "combined_x2", "modules128+combined", "modules64+blocks4")
LABELS = {"kang": "cluster_id", "k562": "condition", "sergio": "perturbation", "hsmm": "time_hours"}


# ---------------------------------------------------------------------------------------------------------- data
def load_set(name: str):
    """``(adata, input note)``: the AnnData a model is set up on; ``.layers['counts']`` holds counts for SCVI."""
    import anndata as ad
    import scanpy as sc
    import scipy.sparse as sp

    import biojepa as bj

    if name == "kang":
        a = bj.datasets.kang2018_ifnb()
        a = ad.AnnData(sp.csr_matrix(a.X, dtype=np.float32), obs=a.obs[[LABELS[name]]].copy(), var=a.var[[]])
        a.layers["counts"] = a.X.copy()
    elif name == "k562":
        a = bj.datasets.perturbench_devel()
        a = a[a.obs["dataset"].astype(str) == "norman19"].copy()
        X = a.X.toarray() if sp.issparse(a.X) else np.asarray(a.X)
        counts = np.rint(np.expm1(X) * a.obs["ncounts"].to_numpy()[:, None] / 1e4)
        a = ad.AnnData(X.astype(np.float32), obs=a.obs[["condition"]].astype(str).astype("category"), var=a.var[[]])
        a.layers["counts"] = counts.astype(np.float32)
    elif name == "sergio":
        a = bj.datasets.sergio_knockout_sim()
        a = ad.AnnData(sp.csr_matrix(a.X, dtype=np.float32), obs=a.obs[["perturbation"]].astype(str), var=a.var[[]])
        a.layers["counts"] = a.X.copy()
    elif name == "hsmm":
        a = bj.datasets.hsmm_myoblast_timecourse()
        X = np.log1p(a.X.toarray() if sp.issparse(a.X) else np.asarray(a.X, dtype=np.float64))
        keep = (X > 0).mean(0) >= 0.05
        a = ad.AnnData(X[:, keep].astype(np.float32), obs=a.obs[["time_hours"]].astype(str), var=a.var[keep][[]])
        hv = sc.pp.highly_variable_genes(a, n_top_genes=2000, flavor="seurat", inplace=False)
        a = a[:, hv["highly_variable"].to_numpy()].copy()
        a.layers["counts"] = np.rint(np.expm1(a.X)).astype(np.float32)
    elif name == "eccite":
        sys.path.insert(0, str(Path(__file__).parent))
        from _multiomics_data import load_ecciteseq, select_hvgs

        data = load_ecciteseq()
        rna = data["rna"]
        a = rna[:, select_hvgs(rna, 2000)].copy()
        a.layers["counts"] = a.X.copy()
        a.obsm["protein_clr"] = data["clr"].astype(np.float32)
    elif name.startswith("shared:") or name == "pool":
        return _shared_set(name)
    else:
        raise ValueError(f"Unknown set {name!r}; choose from {list(EPOCHS)}.")
    return a


def _shared_set(name: str):
    """Kang, ECCITE RNA and HSMM on the genes all three measure (symbols); ``"pool"`` concatenates them.

    ``X`` holds counts (HSMM's FPKM rounded to integers and read as counts: normalized to CP10k and log1p);
    ``obs["dataset"]`` names the source; labels as in the single sets (``label``), protein CLR in ``obsm``.
    """
    import anndata as ad
    import scipy.sparse as sp

    import biojepa as bj

    sys.path.insert(0, str(Path(__file__).parent))
    from _multiomics_data import load_ecciteseq

    kang = bj.datasets.kang2018_ifnb()
    eccite = load_ecciteseq()
    hsmm = bj.datasets.hsmm_myoblast_timecourse()
    hsmm = ad.AnnData(hsmm.X, obs=hsmm.obs, var=pd.DataFrame(index=hsmm.var["gene_short_name"].astype(str).to_numpy()))
    hsmm = hsmm[:, ~hsmm.var_names.duplicated()]
    genes = [g for g in kang.var_names if g in set(eccite["rna"].var_names) and g in set(hsmm.var_names)]
    parts = {}
    for key, src, label in (
        ("kang", kang, kang.obs["cluster_id"]),
        ("eccite", eccite["rna"], None),
        ("hsmm", hsmm, hsmm.obs["time_hours"]),
    ):
        X = src[:, genes].X
        X = sp.csr_matrix(np.rint(X.toarray() if sp.issparse(X) else np.asarray(X)), dtype=np.float32)
        obs = pd.DataFrame(
            {"dataset": key, "label": label.astype(str).to_numpy() if label is not None else "none"},
            index=[f"{key}-{i}" for i in src.obs_names],
        )
        part = ad.AnnData(X, obs=obs, var=pd.DataFrame(index=genes))
        part.obsm["protein_clr"] = (
            eccite["clr"].astype(np.float32)
            if key == "eccite"
            else np.full((part.n_obs, eccite["clr"].shape[1]), np.nan)
        )
        parts[key] = part
    a = parts[name.removeprefix("shared:")] if name != "pool" else ad.concat(list(parts.values()))
    a.layers["counts"] = a.X.copy()
    return a


# ---------------------------------------------------------------------------------------------------------- scores
def _ridge_cv(Z: np.ndarray, Y: np.ndarray, seed: int, zscore: bool = True) -> float:
    """Mean per-column Pearson r of 5-fold RidgeCV predictions of ``Y`` from ``Z``.

    ``Z``'s columns are z-scored on the training folds, or taken as they are with ``zscore=False``.
    """
    from sklearn.linear_model import RidgeCV
    from sklearn.model_selection import KFold

    # a copy: ``Y`` may be an AnnData view (a subset of the pooled set), into which ``pred[te] = ...`` would not write
    Y = np.array(Y, dtype=np.float64)
    pred = np.zeros_like(Y)
    for tr, te in KFold(5, shuffle=True, random_state=seed).split(Z):
        mu, sd = (Z[tr].mean(0), Z[tr].std(0) + 1e-8) if zscore else (0.0, 1.0)
        ridge = RidgeCV(alphas=np.logspace(-2, 6, 17), alpha_per_target=True).fit((Z[tr] - mu) / sd, Y[tr])
        pred[te] = ridge.predict((Z[te] - mu) / sd)
    p, o = pred - pred.mean(0), Y - Y.mean(0)
    den = np.sqrt((p**2).sum(0) * (o**2).sum(0))
    return float(np.mean(np.where(den > 0, (p * o).sum(0) / np.where(den > 0, den, 1), 0)))


def _readout(Z: np.ndarray, adata, label: str, control: str = "control", top: int = 20) -> float:
    """Mean over singles of r(decoded latent shift, observed expression change) on the top-``top`` changed genes."""
    from sklearn.linear_model import RidgeCV

    X = np.asarray(adata.X, dtype=np.float64)
    mu, sd = Z.mean(0), Z.std(0) + 1e-8
    dec = RidgeCV(alphas=np.logspace(-2, 6, 17)).fit((Z - mu) / sd, X)
    cond = adata.obs[label].astype(str).to_numpy()
    ctrl = cond == control
    z0, x0 = Z[ctrl].mean(0), X[ctrl].mean(0)
    base = dec.predict(((z0 - mu) / sd)[None])[0]
    rs = []
    for c in sorted(set(cond) - {control}):
        if "+" in c:
            continue
        rows = cond == c
        obs = X[rows].mean(0) - x0
        pred = dec.predict(((Z[rows].mean(0) - mu) / sd)[None])[0] - base
        idx = np.argsort(-np.abs(obs))[:top]
        rs.append(np.corrcoef(pred[idx], obs[idx])[0, 1])
    return float(np.mean(rs))


def score(name: str, Z: np.ndarray, adata, seed: int) -> dict:
    """Scores of latent ``Z`` on set ``name``."""
    from biojepa.metrics import effective_rank, knn_accuracy, silhouette

    out = {"effective rank": effective_rank(Z)}
    if name.startswith("shared:"):
        name = name.removeprefix("shared:")
        if name != "eccite":
            labels = adata.obs["label"].astype(str).to_numpy()
            return out | {"kNN accuracy": knn_accuracy(Z, labels, seed=seed), "silhouette": silhouette(Z, labels)}
    if name == "eccite":
        out["protein r"] = _ridge_cv(Z, adata.obsm["protein_clr"], seed)
        return out
    labels = adata.obs[LABELS[name]].astype(str).to_numpy()
    out["kNN accuracy"] = knn_accuracy(Z, labels, seed=seed)
    out["silhouette"] = silhouette(Z, labels)
    if name == "k562":
        out["readout r"] = _readout(Z, adata, LABELS[name])
    return out


# ---------------------------------------------------------------------------------------------------------- one job
def run_job(name: str, method: str, seed: int, accelerator: str, epoch_scale: float = 1.0) -> list[dict]:
    """Train ``method`` on set ``name`` with ``seed`` and score its latent (runs in a worker process).

    A BioJEPA run gives two rows: the latent of the context encoder (what ``get_latent_representation`` returns) and
    that of the EMA target encoder (``"<config> [target]"``).
    """
    import logging
    import warnings

    import scanpy as sc
    import scvi
    import torch

    import biojepa as bj

    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    logging.getLogger("scvi").setLevel(logging.ERROR)
    adata = load_set(name)
    epochs = max(1, round(EPOCHS[name] * epoch_scale))
    start = time.perf_counter()
    trainer = {"accelerator": accelerator, "devices": 1, "enable_progress_bar": False, "max_epochs": epochs}
    if method == "PCA (50)":
        a = adata.copy()
        if name in ("kang", "sergio", "eccite") or name.startswith("shared:"):
            sc.pp.normalize_total(a, target_sum=1e4)
            sc.pp.log1p(a)
        sc.pp.pca(a, n_comps=50, random_state=seed)
        Z = a.obsm["X_pca"]
    elif method == "SCVI":
        scvi.settings.seed = seed
        a = adata.copy()
        scvi.model.SCVI.setup_anndata(a, layer="counts")
        model = scvi.model.SCVI(a)
        model.train(**trainer)
        Z = model.get_latent_representation()
    else:
        scvi.settings.seed = seed
        model_kwargs, train_kwargs = CONFIGS[method]
        model_kwargs, train_kwargs = dict(model_kwargs), dict(train_kwargs)
        if model_kwargs.get("n_modules") == -1:
            model_kwargs["n_modules"] = adata.n_vars
        trainer["max_epochs"] = epochs * train_kwargs.pop("epochs_factor", 1)
        a = adata.copy()
        if name == "pool" or name.startswith("shared:"):
            batch = "dataset" if name == "pool" else None
            bj.BioJEPA.setup_anndata(a, batch_key=batch, input_scale="counts")
        else:
            bj.BioJEPA.setup_anndata(a, layer="counts" if name in ("kang", "sergio", "eccite") else None)
        model = bj.BioJEPA(a, **model_kwargs)
        model.train(**trainer, **train_kwargs)
        Z = model.get_latent_representation()
        seconds = time.perf_counter() - start
        if name == "pool":  # one latent for the three sets, scored on each
            rows = []
            for key in ("kang", "eccite", "hsmm"):
                part = (adata.obs["dataset"] == key).to_numpy()
                row = {"set": f"shared:{key}", "method": f"{method} (pool)", "seed": seed, "train s": seconds}
                rows.append(row | score(f"shared:{key}", np.asarray(Z)[part], adata[part], seed))
            return rows
        # the same run read through the EMA target encoder (I-JEPA evaluates that one)
        module = model.module
        module.context_encoder, module.target_encoder = module.target_encoder, module.context_encoder
        Z_target = model.get_latent_representation()
        module.context_encoder, module.target_encoder = module.target_encoder, module.context_encoder
        row = {"set": name, "method": method + " [target]", "seed": seed, "train s": seconds}
        rows = [row | score(name, np.asarray(Z_target), adata, seed)]
        return [{**row, "method": method, **score(name, np.asarray(Z), adata, seed)}, *rows]
    seconds = time.perf_counter() - start
    return [
        {"set": name, "method": method, "seed": seed, "train s": seconds, **score(name, np.asarray(Z), adata, seed)}
    ]


def _worker_main(argv: list[str]) -> None:
    name, method, seed, accelerator, epoch_scale, out = argv
    rows = run_job(name, method, int(seed), accelerator, float(epoch_scale))
    Path(out).write_text(json.dumps(rows))


# ---------------------------------------------------------------------------------------------------------- driver
def _launch(job: tuple, accelerator: str, epoch_scale: float, tmp: Path, rows_file: Path) -> list[dict]:
    name, method, seed = job
    out = tmp / f"{name}-{method}-{seed}.json".replace(" ", "_").replace("/", "_")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1"}
    cmd = [sys.executable, __file__, "--worker", name, method, str(seed), accelerator, str(epoch_scale), str(out)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        print(f"FAILED {job}: {proc.stderr[-2000:]}", flush=True)
        return []
    rows = json.loads(out.read_text())
    with open(rows_file, "a") as f:  # kept as jobs finish, so that an interrupted grid keeps its rows
        f.writelines(json.dumps(row) + "\n" for row in rows)
    return rows


def summarize(df: pd.DataFrame) -> str:
    """One markdown table per set: mean ± sd over seeds per method."""
    metrics = ["kNN accuracy", "silhouette", "readout r", "protein r", "effective rank"]
    parts = []
    for name, group in df.groupby("set", sort=False):
        cols = [m for m in metrics if m in group and group[m].notna().any()]
        table = group.groupby("method", sort=False)[cols].agg(lambda v: f"{v.mean():.3f} ± {v.std(ddof=1):.3f}")
        n = group.groupby("method", sort=False)["seed"].nunique().rename("seeds")
        parts += [f"**{name}** ({EPOCHS[name]} epochs)", "", table.join(n).to_markdown(), ""]
    return "\n".join(parts)


def main() -> None:
    """Run the grid; see the module docstring."""
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        _worker_main(sys.argv[2:])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", nargs="+", default=list(EPOCHS))
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS))
    parser.add_argument("--baselines", nargs="*", default=["SCVI", "PCA (50)"])
    parser.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS))
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--accelerator", default="cpu")
    parser.add_argument("--gpu-workers", type=int, default=0, help="run the heavy jobs on a GPU, this many at a time")
    parser.add_argument("--epoch-scale", type=float, default=1.0, help="multiply every epoch budget (smoke runs)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/latent.csv"))
    args = parser.parse_args()
    methods = [*args.baselines, *args.configs]
    jobs = [(s, m, seed) for s in args.sets for m in methods for seed in args.seeds]
    # seed by seed (an interrupted grid still covers every method), longest jobs first within a seed
    factor = {"epochs_x2": 2, "combined_x2": 2, "modules128": 2, "modules128+combined": 2, "gene_tokens": 4}
    jobs.sort(key=lambda j: (j[2], -EPOCHS[j[0]] * factor.get(j[1], 1) * (2 if j[0] in HEAVY_SETS else 1)))
    tmp = Path(tempfile.mkdtemp(prefix="latent_jobs_"))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    rows_file = args.out.with_suffix(".jsonl")
    heavy = [j for j in jobs if args.gpu_workers and (j[0] in HEAVY_SETS or j[1] in HEAVY_CONFIGS)]
    light = [j for j in jobs if j not in heavy]
    with ThreadPoolExecutor(args.workers) as cpu, ThreadPoolExecutor(max(args.gpu_workers, 1)) as gpu:
        futures = [gpu.submit(_launch, j, "gpu", args.epoch_scale, tmp, rows_file) for j in heavy]
        futures += [cpu.submit(_launch, j, args.accelerator, args.epoch_scale, tmp, rows_file) for j in light]
        rows = [row for f in futures for row in f.result()]
    df = pd.DataFrame(rows)
    df.to_csv(args.out, index=False)
    text = summarize(df)
    args.out.with_suffix(".md").write_text(
        f"Command: `python benchmarks/latent.py {' '.join(sys.argv[1:])}`\n\n{text}\n"
    )
    print(text)


if __name__ == "__main__":
    main()
