"""Time-course benchmark: BioJEPA trajectories vs carrying the last state forward and linear extrapolation in PCA space.

Splits (every method sees the same training observations):

- ``flu``: the 17 subjects of the H3N2 challenge (bulk blood, log2 microarray, 4,147 genes). The last third of each
  subject's time points (77–108 h) is held out and predicted from the subject's earlier points (0–69 h), which are
  also the only training data. Scored per subject and held-out time, then averaged.
- ``hsmm``: the Trapnell 2014 myoblast time course (single cells, log1p FPKM of the 2,000 most variable genes);
  cells at 0/24/48 h train, the 72 h population is predicted from them (no subject: population mode).
- ``guo``: the Guo 2010 embryo qPCR (48 genes, time = log2 cell stage); the 64-cell stage is predicted from the
  2–32-cell stages (population mode).

Metrics: ``pearson_delta`` (Pearson r of predicted vs observed change of the mean profile from the first observed
time point: the subject's 0 h sample, or the 0 h / 2-cell population), ``l2`` of the mean profiles and, for the
populations, the ``energy_distance`` between predicted and observed cells in the 20-PC space of the training cells.
Baselines: ``CarryForward`` (last observed state: the subject's 69 h sample or the 48 h cells) and ``LinearPCA``
(PCA of the training observations; per subject or per population mean, a least-squares line of the PC scores
over time, extrapolated and added to the last observed state as a change: ``LinearPCA(last2)`` fits the last two
points, ``LinearPCA(all)`` every point). ``--backtest`` also scores BioJEPA after
:meth:`biojepa.BioJEPA.backtest_trajectory` (a copy trained without each sequence's latest third, or the latest
population, chooses the share of the predicted change to keep; the training time is the sum of both trainings).

``--ablation`` compares, on the same held-out targets restricted to genes shared with an external dataset, BioJEPA
trained on the time course with the dynamic loss only (``jepa_weight=0``), with the static masked-module and dynamic
losses (default), the same plus external data in one latent (flu + 1,556 Kang PBMCs as static data; HSMM +
PerturBench devel cells with their perturbation labels, subsampled to 2,000), and the default plus the temporal
smoothness regulariser. External data are log-normalized and moment-matched per gene to the time-course training
observations (``input_scale="log"``).

Run ``python benchmarks/timecourse.py --seeds 0 1 2 --ablation --out benchmarks/results/timecourse.md``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import time
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scanpy as sc
import scvi
from scipy import sparse
from sklearn.decomposition import PCA

import biojepa as bj

sys.path.insert(0, str(Path(__file__).parent))
from _common import cpu_model, quiet

SEEDS = (0, 1, 2)


# ---------------------------------------------------------------------------------------------------------- data
def flu_split(genes: list[str] | None = None) -> dict:
    """Flu: hold out the last third of each subject's time points."""
    adata = bj.datasets.flu_h3n2_challenge()
    if genes is not None:
        adata = adata[:, genes].copy()
    obs = adata.obs
    test = np.zeros(adata.n_obs, bool)
    for _, idx in obs.groupby("Subject", observed=True).indices.items():
        order = idx[np.argsort(obs["time_hours"].to_numpy()[idx])]
        test[order[len(order) - int(np.ceil(len(order) / 3)) :]] = True
    return {"adata": adata, "test": test, "time": "time_hours", "sample": "Subject", "epochs": 300}


def hsmm_split(genes: list[str] | None = None) -> dict:
    """HSMM: log1p FPKM of the 2,000 most variable genes (on the training cells); 72 h held out."""
    raw = bj.datasets.hsmm_myoblast_timecourse()
    adata = ad.AnnData(np.log1p(dense(raw.X)).astype(np.float32), obs=raw.obs[["time_hours", "Media"]].copy())
    adata.var_names = raw.var["gene_short_name"].astype(str).to_numpy()
    adata.var_names_make_unique()
    test = adata.obs["time_hours"].to_numpy() == 72
    if genes is None:
        train = adata[~test]
        keep = np.asarray((train.X > 0).mean(0)).ravel() >= 0.1
        hv = sc.pp.highly_variable_genes(train[:, keep].copy(), n_top_genes=2000, flavor="seurat", inplace=False)
        genes = list(train.var_names[keep][hv["highly_variable"].to_numpy()])
    adata = adata[:, genes].copy()
    return {"adata": adata, "test": test, "time": "time_hours", "sample": None, "epochs": 300}


def guo_split() -> dict:
    """Guo: time = log2 cell stage; the 64-cell stage held out."""
    adata = bj.datasets.guo2010_mouse_embryo()
    adata.obs["stage"] = np.log2(adata.obs["num_cells"].astype(float))
    test = adata.obs["num_cells"].to_numpy() == 64
    return {"adata": adata, "test": test, "time": "stage", "sample": None, "epochs": 200, "log": True}


# ---------------------------------------------------------------------------------------------------------- targets
def targets(split: dict) -> list[dict]:
    """Prediction tasks: per subject (its held-out times) or one population task (the held-out time)."""
    adata, test, tkey, skey = split["adata"], split["test"], split["time"], split["sample"]
    X = dense(adata.X)
    t = adata.obs[tkey].to_numpy(float)
    tasks = []
    if skey:
        for name, idx in adata.obs.groupby(skey, observed=True).indices.items():
            ctx, tgt = idx[~test[idx]], idx[test[idx]]
            ctx, tgt = ctx[np.argsort(t[ctx])], tgt[np.argsort(t[tgt])]
            tasks.append({"name": name, "context": ctx, "times": t[tgt], "true": [X[[i]] for i in tgt],
                          "base": X[ctx[0]], "last": X[ctx[-1]]})  # fmt: skip
    else:
        train = np.flatnonzero(~test)
        first, last = t[train].min(), t[train].max()
        T = np.unique(t[test])
        base, prev = X[train][t[train] == first].mean(0), X[train][t[train] == last].mean(0)
        tasks.append({"name": "population", "context": train, "times": T, "true": [X[t == tt] for tt in T],
                      "base": base, "last": prev})  # fmt: skip
    return tasks


def dense(X) -> np.ndarray:
    return np.asarray(X.toarray() if sparse.issparse(X) else X, dtype=np.float64)


# ---------------------------------------------------------------------------------------------------------- methods
def carry_forward(split: dict, task: dict) -> list[np.ndarray]:
    X, t = dense(split["adata"].X), split["adata"].obs[split["time"]].to_numpy(float)
    ctx = task["context"]
    last = X[ctx][t[ctx] == t[ctx].max()]
    return [last.copy() for _ in task["times"]]


def linear_pca(split: dict, task: dict, pca: PCA, n_last: int | None) -> list[np.ndarray]:
    """Line through the (mean) PC scores of the last ``n_last`` observed times, its change added to the last state."""
    X, t = dense(split["adata"].X), split["adata"].obs[split["time"]].to_numpy(float)
    ctx = task["context"]
    times = np.unique(t[ctx])
    scores = np.stack([pca.transform(X[ctx][t[ctx] == tt].mean(0, keepdims=True))[0] for tt in times])
    if n_last is not None:
        times, scores = times[-n_last:], scores[-n_last:]
    if len(times) < 2:
        return carry_forward(split, task)
    A = np.stack([np.ones_like(times), times], 1)
    coef, *_ = np.linalg.lstsq(A, scores, rcond=None)  # (2, k)
    last = X[ctx][t[ctx] == t[ctx].max()]
    t_last = t[ctx].max()
    return [last + (coef[1] * (T - t_last)) @ pca.components_ for T in task["times"]]


def fit_biojepa(split: dict, seed: int, epochs: int, model_kwargs: dict, extra: ad.AnnData | None = None):
    """Train BioJEPA on the training observations (plus ``extra`` static/perturbation data in one latent)."""
    scvi.settings.seed = seed
    adata = split["adata"][~split["test"]].copy()
    setup = {"time_key": split["time"], "sample_key": split["sample"]}
    if split.get("log") or extra is not None:
        setup["input_scale"] = "log"
    if extra is not None:
        adata.obs["dataset"] = "timecourse"
        if "condition" in extra.obs:
            adata.obs["condition"] = "control"
        adata = ad.concat([adata, extra], join="inner", merge="same")
        adata.obs["dataset"] = adata.obs["dataset"].astype("category")
        setup["batch_key"] = "dataset"
        if "condition" in adata.obs:
            adata.obs["condition"] = adata.obs["condition"].astype(str).replace("nan", "control")
            setup.update(perturbation_key="condition", control_value="control")
    bj.BioJEPA.setup_anndata(adata, **setup)
    model = bj.BioJEPA(adata, **model_kwargs)
    model.train(max_epochs=epochs, batch_size=256 if extra is not None else 128, enable_progress_bar=False)
    return model, adata


def biojepa_predict(model, split: dict, task: dict, rollout_step=None, seed=0, change_scale=None) -> list[np.ndarray]:
    adata = split["adata"]
    if "dataset" in model.adata.obs:
        adata = adata.copy()
        adata.obs["dataset"] = "timecourse"
        if "condition" in model.adata.obs:
            adata.obs["condition"] = "control"
    pred = model.predict_trajectory(adata, indices=task["context"], time_points=task["times"],
                                    rollout_step=rollout_step, seed=seed, change_scale=change_scale)  # fmt: skip
    tkey = split["time"]
    return [dense(pred[pred.obs[tkey].to_numpy(float) == T].X) for T in task["times"]]


# ---------------------------------------------------------------------------------------------------------- scoring
def score(pred: list[np.ndarray], task: dict, pca: PCA) -> dict:
    out = {"pearson_delta": [], "l2": [], "energy_distance": []}
    for p, y in zip(pred, task["true"], strict=True):
        pm, ym = p.mean(0), y.mean(0)
        out["pearson_delta"].append(bj.metrics.pearson_delta(pm, ym, task["base"]))
        out["l2"].append(float(np.linalg.norm(pm - ym)))
        if len(y) > 1:
            out["energy_distance"].append(bj.metrics.energy_distance(pca.transform(y), pca.transform(p)))
    return {k: float(np.nanmean(v)) if v else np.nan for k, v in out.items()}


def evaluate_split(
    name: str, split: dict, seed: int, epochs: int, model_kwargs: dict, rollout: float | None, backtest: bool = False
):
    tasks = targets(split)
    X = dense(split["adata"].X)
    pca = PCA(n_components=min(20, X.shape[1] - 1), random_state=0).fit(X[~split["test"]])
    rows = []

    def add(method, preds, seconds=np.nan, change_scale=np.nan):
        scores = [score(p, task, pca) for p, task in zip(preds, tasks, strict=True)]
        row = {k: float(np.nanmean([s[k] for s in scores])) for k in scores[0]}
        rows.append({"split": name, "seed": seed, "method": method, **row, "seconds": seconds,
                     "change_scale": change_scale})  # fmt: skip

    add("CarryForward", [carry_forward(split, t) for t in tasks])
    add("LinearPCA(last2)", [linear_pca(split, t, pca, 2) for t in tasks])
    add("LinearPCA(all)", [linear_pca(split, t, pca, None) for t in tasks])
    start = time.perf_counter()
    model, _ = fit_biojepa(split, seed, epochs or split["epochs"], model_kwargs)
    fit_s = time.perf_counter() - start
    add("BioJEPA", [biojepa_predict(model, split, t, seed=seed, change_scale=1.0) for t in tasks], fit_s)
    if rollout:
        preds = [biojepa_predict(model, split, t, rollout, seed, change_scale=1.0) for t in tasks]
        add(f"BioJEPA(rollout {rollout:g})", preds, fit_s)
    if backtest:
        start = time.perf_counter()
        model.backtest_trajectory(seed=seed)
        seconds = fit_s + time.perf_counter() - start
        scale = model.trajectory_change_scale_
        add("BioJEPA, backtested", [biojepa_predict(model, split, t, seed=seed) for t in tasks], seconds, scale)
        if rollout:
            preds = [biojepa_predict(model, split, t, rollout, seed) for t in tasks]
            add(f"BioJEPA(rollout {rollout:g}), backtested", preds, seconds, scale)
    return rows


# ---------------------------------------------------------------------------------------------------------- ablation
def moment_match(extra: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Per gene, give ``extra`` the mean and sd of ``reference``."""
    mu, sd = extra.mean(0), extra.std(0) + 1e-6
    return (extra - mu) / sd * reference.std(0) + reference.mean(0)


def external_kang(genes: list[str], reference: np.ndarray) -> ad.AnnData:
    kang = bj.datasets.kang2018_ifnb()[:, genes]
    X = moment_match(np.log1p(dense(kang.X) / dense(kang.X).sum(1, keepdims=True) * 1e4), reference)
    obs = pd.DataFrame({"time_hours": 0.0, "Subject": [f"kang{i}" for i in range(kang.n_obs)],
                        "dataset": "kang"}, index=kang.obs_names)  # fmt: skip
    return ad.AnnData(X.astype(np.float32), obs=obs, var=pd.DataFrame(index=genes))


def external_perturbench(genes: list[str], reference: np.ndarray, seed: int, n: int = 2000) -> ad.AnnData:
    pb = bj.datasets.perturbench_devel()
    rows = np.random.default_rng(seed).choice(pb.n_obs, n, replace=False)
    pb = pb[np.sort(rows), genes]
    X = moment_match(np.log1p(dense(pb.X) / np.maximum(dense(pb.X).sum(1, keepdims=True), 1) * 1e4), reference)
    obs = pd.DataFrame({"time_hours": 0.0, "dataset": "perturbench", "condition": pb.obs["condition"].astype(str)},
                       index=pb.obs_names)  # fmt: skip
    return ad.AnnData(X.astype(np.float32), obs=obs, var=pd.DataFrame(index=genes))


def ablation(seed: int, epochs: int, model_kwargs: dict) -> list[dict]:
    rows = []
    flu_genes = sorted(set(bj.datasets.flu_h3n2_challenge().var_names) & set(bj.datasets.kang2018_ifnb().var_names))
    pb_genes = set(bj.datasets.perturbench_devel().var_names)
    hsmm_genes = sorted(set(bj.datasets.hsmm_myoblast_timecourse().var["gene_short_name"].astype(str)) & pb_genes)
    for name, split, make_extra in (
        ("flu", flu_split(flu_genes), lambda s, ref: external_kang(flu_genes, ref)),
        ("hsmm", hsmm_split(hsmm_genes), lambda s, ref: external_perturbench(hsmm_genes, ref, s)),
    ):
        tasks = targets(split)
        X = dense(split["adata"].X)
        pca = PCA(n_components=20, random_state=0).fit(X[~split["test"]])
        arms = {
            "dynamic only": ({"jepa_weight": 0.0}, False),
            "static + dynamic": ({}, False),
            "static + dynamic + external": ({}, True),
            "static + dynamic + smoothness": ({"smoothness_weight": 1.0}, False),
        }
        for arm, (kw, use_extra) in arms.items():
            extra = make_extra(seed, X[~split["test"]]) if use_extra else None
            model, _ = fit_biojepa(split, seed, epochs or split["epochs"], {**model_kwargs, **kw}, extra)
            preds = [biojepa_predict(model, split, t, seed=seed) for t in tasks]
            scores = [score(p, t, pca) for p, t in zip(preds, tasks, strict=True)]
            row = {k: float(np.nanmean([s[k] for s in scores])) for k in scores[0]}
            rows.append({"split": f"{name} ({split['adata'].n_vars} genes)", "seed": seed, "method": arm, **row})
        for method, fn in (("CarryForward", carry_forward), ("LinearPCA(last2)", linear_pca)):
            scores = [score(fn(split, t, pca, 2) if fn is linear_pca else fn(split, t), t, pca) for t in tasks]
            row = {k: float(np.nanmean([s[k] for s in scores])) for k in scores[0]}
            rows.append({"split": f"{name} ({split['adata'].n_vars} genes)", "seed": seed, "method": method, **row})
    return rows


# ---------------------------------------------------------------------------------------------------------- report
def summarize(df: pd.DataFrame) -> str:
    lines = []
    metrics = [m for m in ("pearson_delta", "l2", "energy_distance") if m in df and df[m].notna().any()]
    for split, d in df.groupby("split", sort=False):
        lines += [f"### {split}", "", "| method | " + " | ".join(metrics) + " |", "|---" * (len(metrics) + 1) + "|"]
        for method, m in d.groupby("method", sort=False):
            cells = []
            for k in metrics:
                v = m[k].dropna()
                cells.append("–" if v.empty else f"{v.mean():.3f} ± {v.std(ddof=1) if len(v) > 1 else 0:.3f}")
            lines.append(f"| {method} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS))
    parser.add_argument("--splits", nargs="+", default=["flu", "hsmm", "guo"])
    parser.add_argument("--epochs", type=int, default=None, help="override each split's epoch budget")
    parser.add_argument("--rollout", type=float, nargs="*", default=None, help="rollout step per split (time units)")
    parser.add_argument("--ablation", action="store_true")
    parser.add_argument("--backtest", action="store_true", help="also score BioJEPA after `backtest_trajectory`")
    parser.add_argument("--model-kwargs", type=json.loads, default={})
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/timecourse.md"))
    args = parser.parse_args(argv)
    quiet()
    makers = {"flu": flu_split, "hsmm": hsmm_split, "guo": guo_split}
    rollout = {"flu": 12.0, "hsmm": None, "guo": None}
    rows, abl = [], []
    start = time.perf_counter()
    for seed in args.seeds:
        for name in args.splits:
            rows += evaluate_split(
                name, makers[name](), seed, args.epochs, args.model_kwargs, rollout[name], args.backtest
            )
            print(pd.DataFrame(rows).tail(5).to_string(), flush=True)
        if args.ablation:
            abl += ablation(seed, args.epochs, args.model_kwargs)
            print(pd.DataFrame(abl).tail(12).to_string(), flush=True)
    df = pd.DataFrame(rows)
    cmd = "python benchmarks/timecourse.py " + " ".join(sys.argv[1:] if argv is None else argv)
    text = [f"# Time-course benchmark ({datetime.date.today()})", "", f"`{cmd}`", "",
            f"Seeds {args.seeds}; {cpu_model()}; {time.perf_counter() - start:.0f} s.", "", summarize(df)]  # fmt: skip
    if abl:
        text += ["## Ablation: what trains the latent", "", summarize(pd.DataFrame(abl))]
        df = pd.concat([df, pd.DataFrame(abl).assign(ablation=True)])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(text))
    df.to_csv(args.out.with_suffix(".csv"), index=False)
    print("\n".join(text))


if __name__ == "__main__":
    main()
