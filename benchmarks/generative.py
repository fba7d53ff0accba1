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
- ``mcfaline``: the glioma rows of the PerturBench devel file (McFaline-Figueroa 2023 CRISPRi, log-normalized; 9
  knockouts in 3 lines, 46-100 cells each). Each knockout is held out in one line (3 per line, as in
  ``perturbation.py``); 5 of these (knockout, line) pairs are test, 4 calibration, and every knockout still trains
  in its other two lines (predicting a knockout in a line that never saw it).
- ``hsmm``: the Trapnell 2014 myoblast time course (log1p FPKM of the 1,000 most variable genes); 0/24/48 h train,
  the 72 h cells are sampled from the 48 h cells (distances only: one held-out time cannot calibrate intervals).

- ``eccite`` (not in the default list): protein sampled from RNA, 5-fold cross-validation over the 500 ECCITE-seq
  PBMCs (``KFold(shuffle=True, random_state=seed)``; RNA: raw counts of the fold's 2,000 HVGs, as in
  ``multiomics.py``; protein: per-cell CLR of the 49 ADTs). A MuData model trains on the fold's training cells (RNA +
  protein) and samples the held-out cells' protein from their RNA (``sample_modality``, 50 profiles per cell).
- ``cite_sim`` (not in the default list): the same on simulated CITE-seq (``simulated_cite``: 2,000 training and
  500 held-out cells, 200 genes, 20 proteins; given the RNA, half the proteins switch on at random, so the protein
  of a cell is bimodal), one split per seed.

  Methods of the two modality splits: ``BioJEPA flow``; ``GaussianResidual``, the point prediction plus Gaussian
  noise of the flows' per-protein scale, floored at each protein's training minimum (what an untrained flow
  samples); ``PredictedMean``, the point prediction of
  ``predict_modality``; ``NearestSeen``, the measured protein of the training cell nearest in the latent. Scored on
  CLR protein by the distances below (one profile per held-out cell against the measured ones), by the energy score
  of each cell's profiles against its own measurement (``bj.metrics.energy_score``; a point scores its distance),
  by the coverage of per-cell, per-protein intervals (central quantiles of the 50 samples; ``gaussian``: those of
  GaussianResidual) and by the Spearman correlation, across held-out cells, of ``obs["uncertainty"]`` of
  ``predict_modality(..., levels=...)`` with the point prediction's error (reference: the size of the point's
  departure from the training mean).

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

Run ``python benchmarks/generative.py --seeds 0 1 2 --out benchmarks/results/generative.md``; the modality splits:
``--splits eccite cite_sim --out benchmarks/results/generative_modality.md``. Diagnostics: ``--spread S`` makes
sampled perturbed cells keep share ``S`` of the flows' per-cell spread instead of the model's choice;
``--spread-curve 0 0.5 1`` adds rows ``BioJEPA flow (spread s)`` sampled at each share next to the model's own.
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
KEY, CONTROL, LINE, DOSE = "condition", "control", "cell_type", "dose"
HELD_DOSE = "1"  # the dose held out of the dose screen's test and calibration compounds
DOSE_SCREEN = Path.home() / ".cache" / "biojepa" / "sergio_dose_screen_1000genes_seed0.h5ad"
LEVELS = (0.5, 0.8, 0.95)
N_CELL_SAMPLES = 50  # profiles sampled per held-out cell (eccite)
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


def mcfaline_data() -> ad.AnnData:
    full = bj.datasets.perturbench_devel(subset="mcfaline23")
    adata = ad.AnnData(sparse.csr_matrix(full.X, dtype=np.float32), var=full.var[[]])
    adata.obs[KEY] = canonical(full.obs[KEY])
    adata.obs[LINE] = full.obs[LINE].astype(str).to_numpy()
    adata.obs_names = full.obs_names
    return adata


def dose_data(path: Path = DOSE_SCREEN) -> ad.AnnData:
    """Single compounds and vehicle of one line (lineA) of the simulated dose screen, counts."""
    raw = ad.read_h5ad(path)
    keep = ((raw.obs["cell_line"] == "lineA") & (raw.obs["n_compounds"] <= 1)).to_numpy()
    keep &= (raw.obs["condition"] != "disease").to_numpy()
    adata = ad.AnnData(sparse.csr_matrix(raw.X[keep], dtype=np.float32), var=raw.var[[]])
    adata.obs[KEY] = raw.obs["condition"].astype(str).to_numpy()[keep]
    adata.obs[DOSE] = raw.obs["dose"].astype(str).to_numpy()[keep]
    adata.obs_names = raw.obs_names[keep]
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
    test_labels = sorted(k for k, v in role.items() if v == "test")
    return {"role": np.array([role[x] for x in labels]), "test": [(x, None, None) for x in test_labels]}


def combo_split(adata: ad.AnnData, seed: int, n_test: int) -> dict:
    """Doubles whose members are both observed alone: ``n_test`` test, the others calibration; the rest trains."""
    labels = adata.obs[KEY].to_numpy()
    singles = {x for x in labels if x != CONTROL and "+" not in x}
    doubles = sorted({x for x in labels if "+" in x and set(x.split("+")) <= singles})
    order = list(np.random.default_rng(seed).permutation(doubles))
    role = {x: "train" for x in set(labels)} | {x: "test" for x in order[:n_test]} | {x: "cal" for x in order[n_test:]}
    return {"role": np.array([role[x] for x in labels]), "test": [(x, None, None) for x in sorted(order[:n_test])]}


def line_split(adata: ad.AnnData, seed: int, n_test: int) -> dict:
    """Each knockout held out in one line (3 per line, as in ``perturbation.py``): ``n_test`` test pairs, the others
    calibration; every knockout still trains in the other two lines."""
    labels, lines = adata.obs[KEY].to_numpy(), adata.obs[LINE].to_numpy()
    perts, line_names = sorted(set(labels) - {CONTROL}), sorted(set(lines))
    rng = np.random.default_rng(seed)
    held = [(p, line_names[i * len(line_names) // len(perts)]) for i, p in enumerate(rng.permutation(perts))]
    held = [held[i] for i in rng.permutation(len(held))]
    role_of = {pair: "test" for pair in held[:n_test]} | {pair: "cal" for pair in held[n_test:]}
    role = np.array([role_of.get(pair, "train") for pair in zip(labels, lines, strict=True)])
    return {"role": role, "test": [(label, line, None) for label, line in sorted(held[:n_test])]}


def dose_split(adata: ad.AnnData, seed: int, n_test: int, n_cal: int) -> dict:
    """The middle dose of ``n_test`` compounds is test, of ``n_cal`` others calibration; their other doses train."""
    labels, doses = adata.obs[KEY].to_numpy(), adata.obs[DOSE].to_numpy()
    order = list(np.random.default_rng(seed).permutation(sorted(set(labels) - {CONTROL})))
    test, cal = set(order[:n_test]), set(order[n_test : n_test + n_cal])
    middle = doses == HELD_DOSE
    role = np.where(middle & np.isin(labels, list(test)), "test", "train")
    role[middle & np.isin(labels, list(cal))] = "cal"
    return {"role": role, "test": [(x, None, HELD_DOSE) for x in sorted(test)]}


#: ``--spread``: the share of the flows' per-cell spread every sampled perturbed cell keeps (``None``: the model's).
SPREAD = None
#: ``--spread-curve``: shares sampled as extra rows ``BioJEPA flow (spread s)`` next to the model's own choice.
SPREAD_CURVE: tuple[float, ...] = ()


def fit(model, epochs: int, flow_epochs: int, seed: int, backtest: bool = False) -> tuple[float, float]:
    """Train the JEPA, then the generative head (and with ``backtest`` the time-course backtest, which then also
    chooses the spread of extrapolated cells); times in seconds, the backtest's counted with the JEPA's."""
    start = time.time()
    model.train(max_epochs=epochs, enable_progress_bar=False)
    jepa_s = time.time() - start
    start = time.time()
    model.train_generative(max_epochs=flow_epochs, seed=seed)
    flow_s = time.time() - start
    if SPREAD is not None:  # --spread: a diagnostic share of the flows' spread instead of the model's choice
        model.generative_config_["spread"] = SPREAD
    if backtest:
        start = time.time()
        model.backtest_trajectory(seed=seed)
        jepa_s += time.time() - start
    return jepa_s, flow_s


def even_draw(rows, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` of ``rows``, each once before any twice: the baselines draw their cells as the model draws its sources."""
    order = np.concatenate([rng.permutation(len(rows)) for _ in range(-(-n // len(rows)))])[:n]
    return np.asarray(rows)[order]


def log_normalize(X, counts: bool) -> np.ndarray:
    X = X.toarray() if sparse.issparse(X) else np.asarray(X)
    X = X.astype(np.float64)
    if counts:
        X = np.log1p(X / np.maximum(X.sum(1, keepdims=True), 1e-8) * 1e4)
    return X


# ---------------------------------------------------------------------------------------------------------- runs
SPLITS = {
    "sergio": lambda adata, seed: gene_split(adata, seed, 6, 5),
    "norman": lambda adata, seed: combo_split(adata, seed, 3),
    "mcfaline": lambda adata, seed: line_split(adata, seed, 5),
    "dose": lambda adata, seed: dose_split(adata, seed, 6, 6),
}


def perturbation_run(name: str, adata: ad.AnnData, seed: int, epochs: int, flow_epochs: int, counts: bool) -> dict:
    split = SPLITS[name](adata, seed)
    role, test = split["role"], split["test"]  # test: (label, line, dose), None where the set has no such column
    lined, dosed = LINE in adata.obs, DOSE in adata.obs
    train = adata[role == "train"].copy()
    labels = adata.obs[KEY].to_numpy()
    lines = adata.obs[LINE].to_numpy() if lined else np.full(adata.n_obs, None)
    doses = adata.obs[DOSE].to_numpy() if dosed else np.full(adata.n_obs, None)
    cal = adata[(role == "cal") | (labels == CONTROL)].copy()
    scvi.settings.seed = seed
    bj.BioJEPA.setup_anndata(train, perturbation_key=KEY, control_value=CONTROL, dose_key=DOSE if dosed else None,
                             categorical_covariate_keys=[LINE] if lined else None)  # fmt: skip
    model = bj.BioJEPA(train)
    jepa_s, flow_s = fit(model, epochs, flow_epochs, seed)
    rows, cov_rows, unc_rows = [], [], []

    def cells(label, line, dose):
        return (labels == label) & (lines == line) & (doses == dose)

    # -- distances
    log_all = log_normalize(adata.X, counts)
    pca = PCA(50, random_state=seed).fit(log_all[role == "train"])
    rng = np.random.default_rng(seed)
    trained = role == "train"
    sample_s = 0.0
    for label, line, dose in test:
        covariates = {LINE: line} if lined else None
        control = np.flatnonzero((labels == CONTROL) & (lines == line))
        observed = pca.transform(log_all[cells(label, line, dose)])
        n = len(observed)
        pred = model.predict_perturbation(label, covariates=covariates, dose=dose)
        start = time.time()
        generated = model.sample_perturbation(label, n_cells=n, covariates=covariates, dose=dose, seed=seed)
        sample_s += time.time() - start
        d_log = np.asarray(pred.layers["delta"][0], dtype=np.float64)
        if counts:  # the prediction's change on the log scale: log of predicted mean over log of control mean
            ctrl_mean = np.asarray(adata.X[control].mean(0)).ravel()
            d_log = np.log1p(np.asarray(pred.X[0]).ravel()) - np.log1p(ctrl_mean)
        pick = even_draw(control, n, rng)
        if dosed:  # the nearest seen condition: the compound at its nearest training dose (log scale; ties: lower)
            seen = sorted({float(d) for d in doses[trained & (labels == label)]})
            near = seen[int(np.argmin(np.abs(np.log(seen) - np.log(float(dose)))))]
            near_rows = np.flatnonzero(trained & (labels == label) & (doses.astype(float) == near))
        else:  # the seen perturbation (in this line) whose predicted latent shift is nearest
            emb_seen = model.get_perturbation_embedding(covariates=covariates)
            seen_here = {x for x in labels[trained & (lines == line)]}
            emb_seen = emb_seen[emb_seen.obs[KEY].isin(seen_here).to_numpy()]
            emb_test = model.get_perturbation_embedding(label, covariates=covariates)
            nearest = emb_seen.obs[KEY].to_numpy()[np.argmin(((emb_seen.X - emb_test.X[0]) ** 2).sum(1))]
            near_rows = np.flatnonzero(trained & (labels == nearest) & (lines == line))
        curve = {}
        for share in SPREAD_CURVE:  # diagnostic: the same prediction with another share of the flows' spread
            chosen, model.generative_config_["spread"] = model.generative_config_["spread"], share
            at = model.sample_perturbation(label, n_cells=n, covariates=covariates, dose=dose, seed=seed)
            curve[f"BioJEPA flow (spread {share:g})"] = log_normalize(at.X, counts)
            model.generative_config_["spread"] = chosen
        candidates = {
            "BioJEPA flow": log_normalize(generated.X, counts),
            **curve,
            "ShiftedControl": np.maximum(log_all[pick] + d_log, 0.0),
            "NearestSeen": log_all[even_draw(near_rows, n, rng)],
            "Control": log_all[pick],
        }
        name_of = label + (f" in {line}" if line is not None else "") + (f" at {dose}" if dose is not None else "")
        for method, X in candidates.items():
            row = {"split": name, "seed": seed, "label": name_of, "method": method}
            rows.append(row | {k: f(observed, pca.transform(X)) for k, f in DISTANCES.items()})
    # -- calibration and coverage
    model.calibrate_uncertainty(cal, seed=seed)
    in_test = np.zeros(adata.n_obs, bool)
    for entry in test:
        in_test |= cells(*entry)
    n_cells = int(np.median([cells(*entry).sum() for entry in test]))
    keys = [LINE] if lined else None
    for calibrated in (True, False):
        if not calibrated:
            del model.uncertainty_calibration_
        parts = []
        for dose in sorted({d for _, _, d in test}, key=str):  # one call per dose: `dose` applies to every label
            names = sorted({label for label, _, d in test if d == dose})
            part = model.predict_uncertainty(names, levels=RELIABILITY_LEVELS, n_cells=n_cells, seed=seed, dose=dose)
            part_lines = part.obs[LINE].to_numpy() if lined else [None] * part.n_obs
            held = {(label, line) for label, line, d in test if d == dose}
            parts.append(part[np.array([pair in held for pair in zip(part.obs[KEY], part_lines, strict=True)])])
        unc = ad.concat(parts, merge="same") if len(parts) > 1 else parts[0].copy()
        cov = bj.metrics.interval_coverage(unc, adata[in_test], KEY, keys)
        cov_rows.append(cov.assign(split=name, seed=seed, intervals="calibrated" if calibrated else "normal"))
        if calibrated:
            row_lines = unc.obs[LINE].to_numpy() if lined else [None] * unc.n_obs
            row_doses = [next(d for x, ln, d in test if x == label and ln == line)
                         for label, line in zip(unc.obs[KEY], row_lines, strict=True)]  # fmt: skip
            X_obs = np.vstack([np.asarray(adata.X[cells(x, line, d)].mean(0)).ravel()
                               for x, line, d in zip(unc.obs[KEY], row_lines, row_doses, strict=True)])  # fmt: skip
            error = np.sqrt(((np.asarray(unc.X) - X_obs) ** 2).mean(1))
            size = np.sqrt((np.asarray(unc.layers["delta"]) ** 2).mean(1))
            unc_rows.append({"split": name, "seed": seed, "n": len(test),
                             "spearman_uncertainty": spearmanr(unc.obs["uncertainty"], error)[0],
                             "spearman_delta_size": spearmanr(size, error)[0]})  # fmt: skip
    seconds = {"jepa_s": jepa_s, "flow_s": flow_s, "sample_s": sample_s,
               "spread": model.generative_config_["spread"]}  # fmt: skip
    return {"distances": rows, "coverage": cov_rows, "uncertainty": unc_rows, "seconds": seconds}


def hsmm_run(seed: int, epochs: int, flow_epochs: int, backtest: bool = False) -> dict:
    adata = hsmm_data(seed)
    test = adata.obs["time_hours"].to_numpy() == 72
    train = adata[~test].copy()
    scvi.settings.seed = seed
    bj.BioJEPA.setup_anndata(train, time_key="time_hours")
    model = bj.BioJEPA(train)
    jepa_s, flow_s = fit(model, epochs, flow_epochs, seed, backtest)
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
    pick = even_draw(last, n, rng)
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
    scale = getattr(model, "trajectory_change_scale_", None)
    config = model.generative_config_  # the backtest's share of the spread where it chose one, else the out-of-bag one
    return {"distances": rows, "coverage": [], "uncertainty": [],
            "seconds": {"jepa_s": jepa_s, "flow_s": flow_s, "sample_s": sample_s, "change_scale": scale,
                        "spread": config.get("trajectory_spread", config["spread"])}}  # fmt: skip


def hsmm_data(seed: int) -> ad.AnnData:
    """HSMM log1p FPKM of the 1,000 most variable genes (chosen on the cells before 72 h)."""
    raw = bj.datasets.hsmm_myoblast_timecourse()
    X = np.log1p(raw.X.toarray() if sparse.issparse(raw.X) else np.asarray(raw.X)).astype(np.float32)
    adata = ad.AnnData(X, obs=raw.obs[["time_hours"]].copy())
    adata.var_names = raw.var["gene_short_name"].astype(str).to_numpy()
    adata.var_names_make_unique()
    test = adata.obs["time_hours"].to_numpy() == 72
    keep = (adata[~test].X > 0).mean(0) >= 0.1
    hv = sc.pp.highly_variable_genes(adata[~test][:, keep].copy(), n_top_genes=1000, flavor="seurat", inplace=False)
    return adata[:, np.flatnonzero(keep)[hv["highly_variable"].to_numpy()]].copy()


def hsmm_intervals_run(seed: int, epochs: int, flow_epochs: int) -> dict:
    """Intervals of the mean at a held-out time: train 0/24 h, calibrate on 48 h, score 72 h."""
    adata = hsmm_data(seed)
    t = adata.obs["time_hours"].to_numpy()
    train = adata[t <= 24].copy()
    scvi.settings.seed = seed
    bj.BioJEPA.setup_anndata(train, time_key="time_hours")
    model = bj.BioJEPA(train)
    jepa_s, flow_s = fit(model, epochs, flow_epochs, seed)
    held = adata[t == 72].copy()
    cov_rows, start = [], time.time()
    for calibrated in (False, True):
        if calibrated:
            model.calibrate_trajectory_uncertainty(adata[t == 48].copy(), seed=seed)
        pred = model.predict_trajectory_uncertainty([72.0], levels=RELIABILITY_LEVELS, n_cells=held.n_obs, seed=seed)
        cov = bj.metrics.interval_coverage(pred, held, "time_hours")
        cov_rows.append(
            cov.assign(split="hsmm_intervals", seed=seed, intervals="calibrated" if calibrated else "normal")
        )
    return {"distances": [], "coverage": cov_rows, "uncertainty": [],
            "seconds": {"jepa_s": jepa_s, "flow_s": flow_s, "sample_s": time.time() - start}}  # fmt: skip


def eccite_run(seed: int, epochs: int, flow_epochs: int) -> dict:
    """Protein sampled from RNA for the held-out cells of 5-fold CV of the ECCITE-seq PBMCs (CLR scale)."""
    from _multiomics_data import load_ecciteseq, make_mudata, select_hvgs
    from sklearn.model_selection import KFold

    data = load_ecciteseq()
    rna, adt, Y = data["rna"], data["adt"], np.asarray(data["clr"], dtype=np.float64)
    parts = []
    for fold, (tr, te) in enumerate(KFold(5, shuffle=True, random_state=seed).split(Y)):
        rna_f = rna[:, select_hvgs(rna[tr], 2000)].copy()
        train = make_mudata(rna_f[tr], adt[tr])
        parts.append(modality_run("eccite", train, rna_f[te].copy(), Y[tr], Y[te], seed, epochs, flow_epochs, fold))
    merged = {
        key: [r for part in parts for r in part[key]] for key in ("distances", "coverage", "uncertainty", "cellwise")
    }
    merged["seconds"] = {k: sum(part["seconds"][k] for part in parts) for k in ("jepa_s", "flow_s", "sample_s")}
    merged["seconds"]["stopped_at"] = [s for part in parts for s in part["seconds"]["stopped_at"]]
    return merged


def cite_sim_run(seed: int, epochs: int, flow_epochs: int) -> dict:
    """Protein sampled from RNA on simulated CITE-seq whose protein depends on RNA through a random switch."""
    train, test = simulated_cite(2000, seed), simulated_cite(500, 1000 + seed)
    clr = {name: np.log1p(np.asarray(m["adt"].X, np.float64)) for name, m in (("train", train), ("test", test))}
    clr = {name: x - x.mean(1, keepdims=True) for name, x in clr.items()}
    return modality_run("cite_sim", train, test["rna"].copy(), clr["train"], clr["test"], seed, epochs, flow_epochs, 0)


def simulated_cite(n: int, seed: int):
    """RNA (200 genes) and protein (20) counts of ``n`` cells driven by 4 shared programs; half the proteins switch.

    The gene and protein loadings are fixed (seed 99); cells draw their programs and, for proteins 0-9, a switch
    that multiplies their rate by e² with probability ``sigmoid(2 · program_0)``: given RNA, those proteins are
    bimodal, the rest Poisson around a mean the RNA sets.
    """
    import mudata as md

    rng, fixed = np.random.default_rng(seed), np.random.default_rng(99)
    W, V = fixed.normal(size=(4, 200)) * 0.6, fixed.normal(size=(4, 20)) * 0.5
    programs = rng.normal(size=(n, 4))
    rna = rng.poisson(np.exp(0.5 + programs @ W)).astype(np.float32)
    on = rng.random(n) < 1 / (1 + np.exp(-2 * programs[:, 0]))
    switch = on[:, None] * (np.arange(20) < 10) * 2.0
    adt = rng.poisson(np.exp(np.linspace(1.5, 5.0, 20) + programs @ V + switch)).astype(np.float32)
    names = pd.Index([f"cell{seed}_{i}" for i in range(n)])
    genes, proteins = (
        pd.DataFrame(index=[f"g{i}" for i in range(200)]),
        pd.DataFrame(index=[f"p{i}" for i in range(20)]),
    )
    obs = pd.DataFrame(index=names)
    return md.MuData({"rna": ad.AnnData(rna, obs=obs, var=genes), "adt": ad.AnnData(adt, obs=obs.copy(), var=proteins)})


def modality_run(split, train, test_rna, Y_train, Y_test, seed, epochs, flow_epochs, fold) -> dict:
    """Fit BioJEPA on ``train`` (MuData rna + adt), sample protein for ``test_rna``; score against ``Y_test`` (CLR).

    Methods: ``BioJEPA flow`` (``sample_modality``), ``GaussianResidual`` (the point prediction plus Gaussian noise
    of the flows' per-protein scale, floored at the training minimum: an untrained flow), ``PredictedMean``
    (``predict_modality``, a point) and ``NearestSeen`` (the training cell nearest in the latent, a point).
    """
    scvi.settings.seed = seed
    bj.BioJEPA.setup_mudata(train, modalities={"rna_layer": "rna", "protein_layer": "adt"})
    model = bj.BioJEPA(train)
    jepa_s, flow_s = fit(model, epochs, flow_epochs, seed)
    n = test_rna.n_obs
    start = time.time()
    samples = np.asarray(model.sample_modality(test_rna, n_samples=N_CELL_SAMPLES, seed=seed).X, np.float64)
    sample_s = time.time() - start
    samples = samples.reshape(n, N_CELL_SAMPLES, -1)  # (cells, samples, proteins)
    point = np.asarray(model.predict_modality(test_rna, target="protein").X, np.float64)
    i = model.module.modality_index("protein")
    std = model.module.gene_std[model.module.modality_offsets[i] : model.module.modality_offsets[i + 1]]
    scale = np.asarray(model.generative_config_["scale"]) * std.cpu().numpy()
    gauss = point[:, None, :] + np.random.default_rng(seed).standard_normal(samples.shape) * scale
    gauss = np.maximum(gauss, Y_train.min(0))  # floored at the training minimum, as sample_modality floors
    z_train = model.get_latent_representation()  # joint latents of the training cells
    z_test = model.get_latent_representation(model._as_mudata(test_rna))  # RNA only
    nearest = Y_train[np.argmin(((z_test[:, None, :] - z_train[None]) ** 2).sum(-1), axis=1)]
    observed = Y_test
    sampled = {"BioJEPA flow": samples, "GaussianResidual": gauss, "PredictedMean": point[:, None],
               "NearestSeen": nearest[:, None]}  # fmt: skip
    rows, cov_rows, cell_rows = [], [], []
    for method, S in sampled.items():
        row = {"split": split, "seed": seed, "label": f"fold {fold}", "method": method}
        rows.append(row | {k: f(observed, S[:, 0]) for k, f in DISTANCES.items()})
        cell_rows.append({"split": split, "seed": seed, "fold": fold, "method": method,
                          "energy_score": bj.metrics.energy_score(S, observed)})  # fmt: skip
    for intervals, S in {"flow samples": samples, "gaussian": gauss}.items():
        for level in RELIABILITY_LEVELS:
            lower, upper = np.quantile(S, [0.5 - level / 2, 0.5 + level / 2], axis=1)
            inside = (observed >= lower) & (observed <= upper)
            cov_rows.append(pd.DataFrame({"split": split, "seed": seed, "intervals": intervals, "fold": fold,
                                          "nominal": level, "coverage": [inside.mean()]}))  # fmt: skip
    pred = model.predict_modality(test_rna, target="protein", levels=LEVELS, n_samples=N_CELL_SAMPLES, seed=seed)
    error = np.sqrt(((point - observed) ** 2).mean(1))
    size = np.sqrt(((point - Y_train.mean(0)) ** 2).mean(1))
    unc_rows = [{"split": split, "seed": seed, "n": n,
                 "spearman_uncertainty": spearmanr(pred.obs["uncertainty"], error)[0],
                 "spearman_delta_size": spearmanr(size, error)[0]}]  # fmt: skip
    stops = model.generative_config_["stopped_at"]
    print(f"  {split} fold {fold} (flows stopped at {stops} of {model.generative_config_['steps']} steps): "
          + ", ".join(f"{r['method']} {r['energy_score']:.3f}" for r in cell_rows), flush=True)  # fmt: skip
    return {"distances": rows, "coverage": cov_rows, "uncertainty": unc_rows, "cellwise": cell_rows,
            "seconds": {"jepa_s": jepa_s, "flow_s": flow_s, "sample_s": sample_s, "stopped_at": stops}}  # fmt: skip


# ---------------------------------------------------------------------------------------------------------- report
def mean_sd(values: pd.Series) -> str:
    values = values.dropna()
    return "n/a" if values.empty else f"{values.mean():.3f} ± {values.std(ddof=0):.3f}"


def report(dist, cov, unc, seconds, cellwise: pd.DataFrame, args, total: float) -> str:
    lines = [f"# Generative head benchmark ({datetime.date.today()})", "",
             f"`python benchmarks/generative.py --seeds {' '.join(map(str, args.seeds))} --epochs {args.epochs} "
             f"--flow-epochs {args.flow_epochs} --splits {' '.join(args.splits)}`", "",
             f"Seeds {list(args.seeds)}; {cpu_model()}, 1 thread; {total:.0f} s.", ""]  # fmt: skip
    if not dist.empty:
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
    if not unc.empty:
        lines += ["## Uncertainty score vs actual error (Spearman across test perturbations)", ""]
        table = unc.groupby("split")[["spearman_uncertainty", "spearman_delta_size"]].agg(mean_sd)
        table["test perturbations per seed"] = unc.groupby("split")["n"].first()
        lines += [table.reset_index().to_markdown(index=False), ""]
    if not cellwise.empty:
        lines += ["## Per-cell profiles (eccite): energy score of each held-out cell's samples (lower is better)", "",
                  f"{N_CELL_SAMPLES} samples per cell; a point prediction scores its distance to the observation. "
                  "Per seed the mean over the 5 folds' held-out cells, mean ± sd over seeds.", ""]  # fmt: skip
        per_seed = cellwise.groupby(["split", "method", "seed"], sort=False)["energy_score"].mean().reset_index()
        table = per_seed.groupby(["split", "method"], sort=False)["energy_score"].agg(mean_sd).reset_index()
        lines += [table.to_markdown(index=False), ""]
    lines += ["## Run time (s, per seed)", ""]
    lines += [seconds.groupby("split")[["jepa_s", "flow_s", "sample_s"]].agg(mean_sd).reset_index()
              .to_markdown(index=False), ""]  # fmt: skip
    if "stopped_at" in seconds:  # modality splits: the step each flow kept (0: Gaussian noise around the point)
        lines += ["## Step each modality flow kept (validation on a fifth of the training cells)", ""]
        kept = (
            seconds.dropna(subset=["stopped_at"])
            .groupby("split")["stopped_at"]
            .agg(lambda v: "; ".join(",".join(map(str, x)) for x in v))
        )
        lines += [kept.reset_index().to_markdown(index=False), ""]
    if "spread" in seconds:  # perturbation splits: the share of the flows' per-cell spread chosen out of bag
        lines += ["## Spread kept by sampled cells (per seed)", ""]
        spreads = seconds.dropna(subset=["spread"]).groupby("split")["spread"].agg(lambda v: ", ".join(map(str, v)))
        lines += [spreads.reset_index().to_markdown(index=False), ""]
    if "change_scale" in seconds and seconds["change_scale"].notna().any():  # HSMM with --backtest
        scales = seconds.dropna(subset=["change_scale"]).groupby("split")["change_scale"]
        lines += ["## Share of the predicted change kept (backtest, per seed)", ""]
        lines += [scales.agg(lambda v: ", ".join(map(str, v))).reset_index().to_markdown(index=False), ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS))
    parser.add_argument("--epochs", type=int, default=30, help="JEPA epochs (perturbation screens)")
    parser.add_argument("--hsmm-epochs", type=int, default=150, help="JEPA epochs (HSMM)")
    parser.add_argument("--eccite-epochs", type=int, default=200, help="JEPA epochs (ECCITE-seq, as multiomics.py)")
    parser.add_argument("--flow-epochs", type=int, default=200)
    parser.add_argument("--backtest", action="store_true", help="HSMM: `backtest_trajectory` after the flows")
    parser.add_argument("--spread", type=float, default=None,
                        help="diagnostic: perturbed cells keep this share of the flows' spread")  # fmt: skip
    parser.add_argument("--spread-curve", type=float, nargs="+", default=(),
                        help="diagnostic: also sample perturbed cells at each of these shares")  # fmt: skip
    parser.add_argument("--splits", nargs="+", default=["sergio", "norman", "mcfaline", "hsmm"],
                        help="also: dose (the simulated dose screen of --dose-data), eccite (protein from RNA), "
                        "cite_sim (simulated), hsmm_intervals")  # fmt: skip
    parser.add_argument("--dose-data", type=Path, default=DOSE_SCREEN,
                        help="file written by simulate_dose_screen.py --seed 0")  # fmt: skip
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "generative.md")
    parser.add_argument("--figure", type=Path, default=None, help="write the reliability diagram here (PNG)")
    args = parser.parse_args()
    global SPREAD, SPREAD_CURVE
    SPREAD, SPREAD_CURVE = args.spread, tuple(args.spread_curve)
    quiet()
    torch.set_num_threads(1)
    data = {"sergio": (sergio_data, True), "norman": (norman_data, False), "mcfaline": (mcfaline_data, False),
            "dose": (lambda: dose_data(args.dose_data), True)}  # fmt: skip
    results = []
    total = time.time()
    for seed in args.seeds:
        for split in args.splits:
            start = time.time()
            if split == "hsmm":
                res = hsmm_run(seed, args.hsmm_epochs, args.flow_epochs, args.backtest)
            elif split == "hsmm_intervals":
                res = hsmm_intervals_run(seed, args.hsmm_epochs, args.flow_epochs)
            elif split == "eccite":
                res = eccite_run(seed, args.eccite_epochs, args.flow_epochs)
            elif split == "cite_sim":
                res = cite_sim_run(seed, args.eccite_epochs, args.flow_epochs)
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
    cellwise = pd.DataFrame([r for res in results for r in res.get("cellwise", [])])
    out = args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    if not dist.empty:
        dist.to_csv(out.with_suffix(".csv"), index=False)
    if not cov.empty:
        cov.to_csv(out.with_name(out.stem + "_coverage.csv"), index=False)
    if not unc.empty:
        unc.to_csv(out.with_name(out.stem + "_uncertainty.csv"), index=False)
    if not cellwise.empty:
        cellwise.to_csv(out.with_name(out.stem + "_cellwise.csv"), index=False)
    text = report(dist, cov, unc, seconds, cellwise, args, total)
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
