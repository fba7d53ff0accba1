"""Generative head benchmark: distributions of generated cells and calibration of predictive intervals.

Splits (per seed, every method sees the same training cells):

- ``sergio``: the 500-gene sergio-rs knockout screen (counts; 20 singles, 10 doubles, 200 cells each). Its 20
  single genes are split at random into 6 test, 5 calibration and 9 training genes: every label holding a test gene
  (and no calibration gene) is a test perturbation, every label holding a calibration gene (and no test gene) a
  calibration perturbation, labels holding both are dropped, the rest trains.
- ``norman``: the K562 rows of the PerturBench devel file (log-normalized; 18 singles, 15 doubles, 100 cells each).
  Only one of its 18 single genes is among the 500 measured genes, so unseen singles cannot be predicted; the 5
  doubles whose members are both observed alone are held out instead, 3 as test and 2 as calibration perturbations
  (at random per seed; Spearman over 3 test perturbations is reported but says little).
- ``hsmm``: the Trapnell 2014 myoblast time course (log1p FPKM of the 1,000 most variable genes); 0/24/48 h train,
  the 72 h cells are sampled from the 48 h cells (distances only: one held-out time cannot calibrate intervals).

Distances (lower is better) between the generated and the observed held-out cells, on log1p-normalized expression
projected on the 50 principal components of the training cells: energy distance, Sinkhorn divergence and MMD.
Methods: ``BioJEPA flow`` (``sample_perturbation`` / ``sample_trajectory``, as many cells as observed), the baselines
``ShiftedControl`` (control / latest cells plus BioJEPA's predicted mean change) and ``NearestSeen`` (training cells of
the seen perturbation whose predicted latent shift is nearest; for time, the latest training time), and ``Control``
(the unperturbed control cells, a reference).

Calibration (perturbation splits): ``calibrate_uncertainty`` on the calibration perturbations, then the coverage of
the 50/80/95 % per-gene intervals of ``predict_uncertainty`` on the test perturbations (``calibrated``) and the
coverage of the same intervals with normal quantiles (``normal``); and the Spearman correlation, across test
perturbations, between ``obs["uncertainty"]`` and the actual error (root mean square over genes of predicted minus
observed mean), next to that of the size of the predicted change (``|delta|``) as a reference score.

Run ``python benchmarks/generative.py --seeds 0 1 2 --out benchmarks/results/generative.md``.
"""

from __future__ import annotations

import argparse
import datetime
import sys
import time
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scanpy as sc
import scvi
import torch
from scipy import sparse
from scipy.stats import spearmanr
from sklearn.decomposition import PCA

import biojepa as bj

sys.path.insert(0, str(Path(__file__).parent))
from _common import cpu_model, quiet

SEEDS = (0, 1, 2)
KEY, CONTROL = "condition", "control"
LEVELS = (0.5, 0.8, 0.95)
RELIABILITY_LEVELS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95)
DISTANCES = {
    "energy_distance": bj.metrics.energy_distance,
    "sinkhorn_divergence": bj.metrics.sinkhorn_divergence,
    "mmd": bj.metrics.mmd,
}


# ---------------------------------------------------------------------------------------------------------- data
def sergio_data() -> ad.AnnData:
    raw = bj.datasets.sergio_knockout_sim()
    adata = ad.AnnData(sparse.csr_matrix(raw.X, dtype=np.float32), var=raw.var[[]])
    adata.obs[KEY] = canonical(raw.obs["perturbation"])
    adata.obs_names = raw.obs_names
    return adata


def norman_data() -> ad.AnnData:
    full = bj.datasets.perturbench_devel()
    keep = (full.obs["dataset"] == "norman19").to_numpy()
    adata = ad.AnnData(sparse.csr_matrix(full.X[keep], dtype=np.float32), var=full.var[[]])
    adata.obs[KEY] = canonical(full.obs[KEY])[keep]
    adata.obs_names = full.obs_names[keep]
    return adata


def canonical(labels: pd.Series) -> np.ndarray:
    """Labels with the genes of a combination sorted (``"B+A"`` → ``"A+B"``), as the model writes them."""
    return np.array(["+".join(sorted(x.split("+"))) for x in labels.astype(str)])


def gene_split(adata: ad.AnnData, seed: int, n_test: int, n_cal: int) -> dict:
    """Labels holding a test gene → test, holding a calibration gene → calibration (both: dropped), others train."""
    labels = adata.obs[KEY].to_numpy()
    singles = sorted({x for x in labels if x != CONTROL and "+" not in x})
    order = list(np.random.default_rng(seed).permutation(singles))
    test, cal = set(order[:n_test]), set(order[n_test : n_test + n_cal])
    role = {}
    for label in set(labels):
        genes = set() if label == CONTROL else set(label.split("+"))
        role[label] = (
            "train"
            if not genes & (test | cal)
            else "test"
            if not genes & cal
            else "cal"
            if not genes & test
            else "drop"
        )
    return {"role": np.array([role[x] for x in labels]), "test": sorted(k for k, v in role.items() if v == "test")}


def combo_split(adata: ad.AnnData, seed: int, n_test: int) -> dict:
    """Doubles whose members are both observed alone: ``n_test`` test, the others calibration; the rest trains."""
    labels = adata.obs[KEY].to_numpy()
    singles = {x for x in labels if x != CONTROL and "+" not in x}
    doubles = sorted({x for x in labels if "+" in x and set(x.split("+")) <= singles})
    order = list(np.random.default_rng(seed).permutation(doubles))
    role = {x: "train" for x in set(labels)} | {x: "test" for x in order[:n_test]} | {x: "cal" for x in order[n_test:]}
    return {"role": np.array([role[x] for x in labels]), "test": sorted(order[:n_test])}


def log_normalize(X, counts: bool) -> np.ndarray:
    X = X.toarray() if sparse.issparse(X) else np.asarray(X)
    X = X.astype(np.float64)
    if counts:
        X = np.log1p(X / np.maximum(X.sum(1, keepdims=True), 1e-8) * 1e4)
    return X


# ---------------------------------------------------------------------------------------------------------- runs
def perturbation_run(name: str, adata: ad.AnnData, seed: int, epochs: int, flow_epochs: int, counts: bool) -> dict:
    split = gene_split(adata, seed, 6, 5) if name == "sergio" else combo_split(adata, seed, 3)
    role = split["role"]
    train = adata[role == "train"].copy()
    cal = adata[(role == "cal") | (adata.obs[KEY].to_numpy() == CONTROL)].copy()
    scvi.settings.seed = seed
    bj.BioJEPA.setup_anndata(train, perturbation_key=KEY, control_value=CONTROL)
    model = bj.BioJEPA(train)
    start = time.time()
    model.train(max_epochs=epochs, enable_progress_bar=False)
    jepa_s = time.time() - start
    start = time.time()
    model.train_generative(max_epochs=flow_epochs, seed=seed)
    flow_s = time.time() - start
    rows, cov_rows, unc_rows = [], [], []
    # -- distances
    log_all = log_normalize(adata.X, counts)
    pca = PCA(50, random_state=seed).fit(log_all[role == "train"])
    labels = adata.obs[KEY].to_numpy()
    control = np.flatnonzero(labels == CONTROL)
    rng = np.random.default_rng(seed)
    test = split["test"]
    pred = model.predict_perturbation(test)
    emb_seen = model.get_perturbation_embedding()
    emb_test = model.get_perturbation_embedding(test)
    seen = emb_seen.obs[KEY].to_numpy()
    start = time.time()
    cells = model.sample_perturbation(test, n_cells=200, seed=seed)
    sample_s = time.time() - start
    gen_log = log_normalize(cells.X, counts)
    for i, label in enumerate(test):
        observed = pca.transform(log_all[labels == label])
        n = len(observed)
        pick = rng.choice(control, n)
        d_log = np.asarray(pred.layers["delta"][i], dtype=np.float64)
        if counts:  # the prediction's change on the log scale: log of predicted mean over log of control mean
            ctrl_mean = np.asarray(adata.X[control].mean(0)).ravel()
            d_log = np.log1p(np.asarray(pred.X[i]).ravel()) - np.log1p(ctrl_mean)
        shifted = np.maximum(log_all[pick] + d_log, 0.0)
        nearest = seen[np.argmin(((emb_seen.X - emb_test.X[i]) ** 2).sum(1))]
        near_rows = np.flatnonzero(labels == nearest)
        candidates = {
            "BioJEPA flow": gen_log[rng.permutation(np.flatnonzero((cells.obs[KEY] == label).to_numpy()))[:n]],
            "ShiftedControl": shifted,
            "NearestSeen": log_all[rng.choice(near_rows, n)],
            "Control": log_all[pick],
        }
        for method, X in candidates.items():
            Y = pca.transform(X)
            row = {"split": name, "seed": seed, "label": label, "method": method}
            rows.append(row | {k: f(observed, Y) for k, f in DISTANCES.items()})
    # -- calibration and coverage
    model.calibrate_uncertainty(cal, seed=seed)
    observed_X = adata[np.isin(labels, test)].copy()
    for calibrated in (True, False):
        if not calibrated:
            del model.uncertainty_calibration_
        unc = model.predict_uncertainty(test, levels=RELIABILITY_LEVELS, n_cells=int(np.median(
            [np.sum(labels == x) for x in test])), seed=seed)  # fmt: skip
        cov = bj.metrics.interval_coverage(unc, observed_X, KEY)
        cov_rows.append(cov.assign(split=name, seed=seed, intervals="calibrated" if calibrated else "normal"))
        if calibrated:
            X_obs = np.vstack([np.asarray(observed_X.X[(observed_X.obs[KEY] == x).to_numpy()].mean(0)).ravel()
                               for x in test])  # fmt: skip
            error = np.sqrt(((np.asarray(unc.X) - X_obs) ** 2).mean(1))
            size = np.sqrt((np.asarray(unc.layers["delta"]) ** 2).mean(1))
            unc_rows.append({"split": name, "seed": seed, "n": len(test),
                             "spearman_uncertainty": spearmanr(unc.obs["uncertainty"], error)[0],
                             "spearman_delta_size": spearmanr(size, error)[0]})  # fmt: skip
    seconds = {"jepa_s": jepa_s, "flow_s": flow_s, "sample_s": sample_s,
               "spread": model.generative_config_["spread"]}  # fmt: skip
    return {"distances": rows, "coverage": cov_rows, "uncertainty": unc_rows, "seconds": seconds}


def hsmm_run(seed: int, epochs: int, flow_epochs: int) -> dict:
    raw = bj.datasets.hsmm_myoblast_timecourse()
    X = np.log1p(raw.X.toarray() if sparse.issparse(raw.X) else np.asarray(raw.X)).astype(np.float32)
    adata = ad.AnnData(X, obs=raw.obs[["time_hours"]].copy())
    adata.var_names = raw.var["gene_short_name"].astype(str).to_numpy()
    adata.var_names_make_unique()
    test = adata.obs["time_hours"].to_numpy() == 72
    keep = (adata[~test].X > 0).mean(0) >= 0.1
    hv = sc.pp.highly_variable_genes(adata[~test][:, keep].copy(), n_top_genes=1000, flavor="seurat", inplace=False)
    adata = adata[:, np.flatnonzero(keep)[hv["highly_variable"].to_numpy()]].copy()
    train = adata[~test].copy()
    scvi.settings.seed = seed
    bj.BioJEPA.setup_anndata(train, time_key="time_hours")
    model = bj.BioJEPA(train)
    start = time.time()
    model.train(max_epochs=epochs, enable_progress_bar=False)
    jepa_s = time.time() - start
    start = time.time()
    model.train_generative(max_epochs=flow_epochs, seed=seed)
    flow_s = time.time() - start
    X = np.asarray(adata.X, dtype=np.float64)
    t = adata.obs["time_hours"].to_numpy()
    pca = PCA(50, random_state=seed).fit(X[~test])
    observed = pca.transform(X[test])
    n = len(observed)
    start = time.time()
    cells = model.sample_trajectory([72.0], n_cells=n, seed=seed)
    sample_s = time.time() - start
    traj = model.predict_trajectory(time_points=[72.0], seed=seed)
    last = np.flatnonzero(t == 48)
    rng = np.random.default_rng(seed)
    pick = rng.choice(last, n)
    change = np.asarray(traj.X, dtype=np.float64).mean(0) - X[last].mean(0)
    candidates = {
        "BioJEPA flow": np.asarray(cells.X, dtype=np.float64),
        "ShiftedControl": np.maximum(X[pick] + change, 0.0),
        "NearestSeen": X[pick],
    }
    rows = []
    for method, Y in candidates.items():
        row = {"split": "hsmm", "seed": seed, "label": "72h", "method": method}
        rows.append(row | {k: f(observed, pca.transform(Y)) for k, f in DISTANCES.items()})
    return {"distances": rows, "coverage": [], "uncertainty": [],
            "seconds": {"jepa_s": jepa_s, "flow_s": flow_s, "sample_s": sample_s}}  # fmt: skip


# ---------------------------------------------------------------------------------------------------------- report
def mean_sd(values: pd.Series) -> str:
    values = values.dropna()
    return "n/a" if values.empty else f"{values.mean():.3f} ± {values.std(ddof=0):.3f}"


def report(dist: pd.DataFrame, cov: pd.DataFrame, unc: pd.DataFrame, seconds: pd.DataFrame, args, total: float) -> str:
    lines = [f"# Generative head benchmark ({datetime.date.today()})", "",
             f"`python benchmarks/generative.py --seeds {' '.join(map(str, args.seeds))} --epochs {args.epochs} "
             f"--flow-epochs {args.flow_epochs}`", "",
             f"Seeds {list(args.seeds)}; {cpu_model()}, 1 thread; {total:.0f} s.", ""]  # fmt: skip
    lines += ["## Distances of generated to observed held-out cells (lower is better)", "",
              "Per seed the mean over held-out perturbations (or the one held-out time); mean ± sd over seeds.",
              ""]  # fmt: skip
    per_seed = dist.groupby(["split", "method", "seed"], sort=False)[list(DISTANCES)].mean().reset_index()
    table = per_seed.groupby(["split", "method"], sort=False)[list(DISTANCES)].agg(mean_sd).reset_index()
    lines += [table.to_markdown(index=False), ""]
    wins = dist.pivot_table(index=["split", "seed", "label"], columns="method", values="energy_distance")
    lines += ["Share of held-out perturbations where the flow's cells are closer (energy distance) than each "
              "baseline's:", ""]  # fmt: skip
    share = []
    for split, frame in wins.groupby(level="split"):
        entry = {"split": split}
        for base in [c for c in frame.columns if c != "BioJEPA flow"]:
            entry[f"vs {base}"] = f"{(frame['BioJEPA flow'] < frame[base]).mean():.2f}"
        share.append(entry)
    lines += [pd.DataFrame(share).to_markdown(index=False), ""]
    if not cov.empty:
        lines += ["## Coverage of per-gene intervals of the mean (nominal 50 / 80 / 95 %)", "",
                  "Fraction of (test perturbation, gene) pairs whose observed mean lies in the interval; per seed "
                  "the mean over test perturbations, mean ± sd over seeds.", ""]  # fmt: skip
        sub = cov[cov["nominal"].isin(LEVELS)]
        per_seed = sub.groupby(["split", "intervals", "nominal", "seed"])["coverage"].mean().reset_index()
        table = per_seed.groupby(["split", "intervals", "nominal"])["coverage"].agg(mean_sd).unstack("nominal")
        table.columns = [f"{100 * c:g} %" for c in table.columns]
        lines += [table.reset_index().to_markdown(index=False), ""]
        lines += ["## Uncertainty score vs actual error (Spearman across test perturbations)", ""]
        table = unc.groupby("split")[["spearman_uncertainty", "spearman_delta_size"]].agg(mean_sd)
        table["test perturbations per seed"] = unc.groupby("split")["n"].first()
        lines += [table.reset_index().to_markdown(index=False), ""]
    lines += ["## Run time (s, per seed)", ""]
    lines += [seconds.groupby("split")[["jepa_s", "flow_s", "sample_s"]].agg(mean_sd).reset_index()
              .to_markdown(index=False), ""]  # fmt: skip
    if "spread" in seconds:  # perturbation splits: the share of the flows' per-cell spread chosen out of bag
        lines += ["## Spread kept by sampled cells (per seed)", ""]
        spreads = seconds.dropna(subset=["spread"]).groupby("split")["spread"].agg(lambda v: ", ".join(map(str, v)))
        lines += [spreads.reset_index().to_markdown(index=False), ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS))
    parser.add_argument("--epochs", type=int, default=30, help="JEPA epochs (perturbation screens)")
    parser.add_argument("--hsmm-epochs", type=int, default=150, help="JEPA epochs (HSMM)")
    parser.add_argument("--flow-epochs", type=int, default=200)
    parser.add_argument("--splits", nargs="+", default=["sergio", "norman", "hsmm"])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "generative.md")
    parser.add_argument("--figure", type=Path, default=None, help="write the reliability diagram here (PNG)")
    args = parser.parse_args()
    quiet()
    torch.set_num_threads(1)
    data = {"sergio": (sergio_data, True), "norman": (norman_data, False)}
    results = []
    total = time.time()
    for seed in args.seeds:
        for split in args.splits:
            start = time.time()
            if split == "hsmm":
                res = hsmm_run(seed, args.hsmm_epochs, args.flow_epochs)
            else:
                loader, counts = data[split]
                res = perturbation_run(split, loader(), seed, args.epochs, args.flow_epochs, counts)
            res["seconds"] |= {"split": split, "seed": seed}
            results.append(res)
            print(f"seed {seed} {split}: {time.time() - start:.0f} s", flush=True)
    total = time.time() - total
    dist = pd.DataFrame([r for res in results for r in res["distances"]])
    cov = pd.concat([c for res in results for c in res["coverage"]] or [pd.DataFrame()], ignore_index=True)
    unc = pd.DataFrame([r for res in results for r in res["uncertainty"]])
    seconds = pd.DataFrame([res["seconds"] for res in results])
    out = args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    dist.to_csv(out.with_suffix(".csv"), index=False)
    if not cov.empty:
        cov.to_csv(out.with_name(out.stem + "_coverage.csv"), index=False)
        unc.to_csv(out.with_name(out.stem + "_uncertainty.csv"), index=False)
    text = report(dist, cov, unc, seconds, args, total)
    out.write_text(text)
    print(text)
    if args.figure is not None and not cov.empty:
        import matplotlib.pyplot as plt

        splits = sorted(cov["split"].unique())
        fig, axes = plt.subplots(1, len(splits), figsize=(4 * len(splits), 4), squeeze=False)
        for ax, split in zip(axes[0], splits, strict=True):
            per_seed = cov[cov["split"] == split].groupby(["intervals", "seed", "nominal"])["coverage"].mean()
            bj.pl.reliability(per_seed.reset_index(), hue="intervals", ax=ax)
            ax.set_title(split)
        fig.tight_layout()
        fig.savefig(args.figure, dpi=120)


if __name__ == "__main__":
    main()
