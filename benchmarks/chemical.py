"""Chemical perturbations on the simulated dose screen: unseen doses, compounds, combinations, a new cell line.

The data are the simulated compound x dose screen of ``simulate_dose_screen.py`` (compounds with known targets and
potencies acting through Hill curves on a known gene network, three cell lines, combinations, a disease state), read
from the file it writes. Per seed one BioJEPA model is trained (``perturbation_features`` = the compounds' feature
table, ``dose_key="dose"``, cell line as covariate) on the cells left after holding out, all at once:

- ``dose_interpolation``: the middle dose (1) of a random half of the compounds seen at other doses;
- ``dose_extrapolation``: the top dose (100) of the other half;
- ``unseen_compound``: every cell of 20 % of the compounds (predicted from their features) at each dose, and every
  combination that contains one (until 2026-12-06 such combinations stayed in training: the rows of
  ``chemical.csv`` were measured with that leak, those of ``chemical_cpa.csv`` without);
- ``unseen_combination``: half of the combinations (both members seen alone at their doses);
- ``unseen_line``: every cell of the third cell line; its control cells are given at prediction.

Baselines (fit on the same training cells, log-normalized expression): ``NearestDose`` and ``LogDoseLinear`` (in log
dose and in log(1 + dose)) for unseen doses; ``TrainMean`` (mean change of the training compounds at the same dose
and line) and ``NearestFeatures`` (the change of the training compound with the most similar features, same dose and
line) for unseen compounds; ``Additive`` (sum of the members' observed changes at their doses) for combinations;
``OtherLines`` (the compound's mean change at that dose in the training lines) for the new line; ``NoChange``
everywhere. Scores: :func:`biojepa.metrics.evaluate` (Pearson delta on the top-20 DE genes, L2 on the top-1000
expressed genes) per (compound, dose, line).

Screening: the disease cells of each training line are the starting cells, that line's control cells the target;
every compound of the library (unseen ones included, from their features) is scored at doses 1, 10 and 100 by
:meth:`biojepa.BioJEPA.screen` (best dose per compound), in latent space and with ``space="expression"`` (anchored
expression predictions), each ranked by ``score`` (fraction of the distance to the target closed) and by
``cosine`` (direction only, as the baseline), and by ``cosine`` at 100 µM alone (one dose per compound, as the
baseline reads one); AUROC against the simulation's true reversers (over the whole library, and over the compounds
with training cells alone), the fraction of them in the top 10 % (recall; at most 4 of 7 with 40 compounds) and the
fraction of the top 10 % that reverses (precision).
Baseline: each compound's observed change at its top training dose (the nearest compound by features for unseen
ones), scored by cosine with minus the observed disease shift.

Peers (``--peers CPA``): CPA (``cpa-tools`` in its own environment, ``benchmarks/peers/setup_cpa.sh``) trains on
the same cells through the peers' adapter and runner, with the cells' doses, plus the new line's control cells
(BioJEPA gets those at prediction; CPA must have seen a line to embed it). It answers every request whose compounds
it saw in training: not the unseen compounds (it has no SMILES for them, and does not read the feature table).

Kang 2018 (``--kang``): IFN-beta as a one-compound case, its response predicted in each cell type held out in turn
(see :func:`kang`).

Run ``python benchmarks/chemical.py --data PATH --seeds 0 1 2 --epochs 20`` (and ``--kang``); rows go to
``benchmarks/results/chemical*.csv`` and a summary table is printed (mean ± sd over seeds).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scanpy as sc
import scvi
import torch
from sklearn.metrics import roc_auc_score

import biojepa as bj

sys.path.insert(0, str(Path(__file__).parent))
from simulate_dose_screen import compound_features

KEY, DOSE, LINE, CONTROL, DISEASE = "condition", "dose", "cell_line", "control", "disease"
EVAL = "_label"  # "<condition>@<dose>": the unit each prediction is scored on
log = logging.getLogger("bench")


def _eval_label(conditions, doses) -> np.ndarray:
    out = []
    for c, d in zip(conditions, doses, strict=True):
        if c == CONTROL:
            out.append(f"{CONTROL}@0")
            continue
        out.append("+".join(f"{g}@{x}" for g, x in zip(str(c).split("+"), str(d).split("+"), strict=True)))
    return np.asarray(out)


def load(path: Path) -> tuple[ad.AnnData, pd.DataFrame, pd.DataFrame]:
    """Log-normalized screen, its compound features and its per-compound truth."""
    adata = ad.read_h5ad(path)
    features = compound_features(adata)
    truth = adata.uns["compounds"].copy()
    adata.layers.clear()
    sc.pp.normalize_total(adata, target_sum=1e4)
    sc.pp.log1p(adata)
    adata.uns = {}
    adata.obs[KEY] = adata.obs[KEY].astype(str)
    adata.obs[DOSE] = adata.obs[DOSE].astype(str)
    adata.obs[LINE] = adata.obs[LINE].astype(str)
    adata.obs[EVAL] = _eval_label(adata.obs[KEY], adata.obs[DOSE])
    return adata, features, truth


def split(adata: ad.AnnData, seed: int) -> dict:
    """Held-out sets of one seed (see the module docstring)."""
    rng = np.random.default_rng(seed)
    obs = adata.obs
    lines = sorted(obs[LINE].unique())
    singles = sorted(c for c in obs[KEY].unique() if c not in (CONTROL, DISEASE) and "+" not in c)
    combos = sorted(c for c in obs[KEY].unique() if "+" in c)
    new_line = lines[seed % len(lines)]
    unseen = sorted(rng.choice(singles, max(1, len(singles) // 5), replace=False))
    rest = [c for c in singles if c not in unseen]
    order = rng.permutation(rest)
    interp, extrap = sorted(order[: len(rest) // 2]), sorted(order[len(rest) // 2 :])
    combo_doses = obs.loc[obs[KEY].isin(combos), [KEY, DOSE]].drop_duplicates()
    combo_doses = combo_doses[combo_doses[KEY].map(lambda c: not (set(c.split("+")) & set(unseen)))]
    held_combos = combo_doses.sample(frac=0.5, random_state=seed)
    # an unseen compound is held out in every condition it is part of, combinations included
    touches_unseen = obs[KEY].map(lambda c: bool(set(str(c).split("+")) & set(unseen))).astype(bool)
    held = (
        (obs[LINE] == new_line)
        | touches_unseen
        | (obs[KEY].isin(interp) & (obs[DOSE] == "1"))
        | (obs[KEY].isin(extrap) & (obs[DOSE] == "100"))
        | pd.Series(list(zip(obs[KEY], obs[DOSE], strict=True)), index=obs.index).isin(
            list(held_combos.itertuples(index=False, name=None))
        )
        | (obs[KEY] == DISEASE)
    ).to_numpy()
    return {
        "train": ~held,
        "lines": [x for x in lines if x != new_line],
        "new_line": new_line,
        "unseen": unseen,
        "interp": interp,
        "extrap": extrap,
        "combos": list(held_combos.itertuples(index=False, name=None)),
    }


class Means:
    """Pseudobulk log-expression means of (condition, dose, line) on the training cells."""

    def __init__(self, adata: ad.AnnData):
        keys = adata.obs[[KEY, DOSE, LINE]].astype(str)
        codes = keys.apply(tuple, axis=1)
        X = adata.X.toarray() if hasattr(adata.X, "toarray") else np.asarray(adata.X)
        self.means = {k: X[(codes == k).to_numpy()].mean(0) for k in codes.unique()}

    def control(self, line: str) -> np.ndarray:
        return self.means[(CONTROL, "0", line)]

    def delta(self, cond: str, dose: str, line: str) -> np.ndarray | None:
        m = self.means.get((cond, dose, line))
        return None if m is None else m - self.control(line)


def _pred(rows: list[tuple[str, str, str, np.ndarray]], var_names) -> ad.AnnData:
    """Prediction AnnData from (condition, dose, line, predicted mean) rows."""
    obs = pd.DataFrame([r[:3] for r in rows], columns=[KEY, DOSE, LINE])
    obs[EVAL] = _eval_label(obs[KEY], obs[DOSE])
    obs.index = [str(i) for i in range(len(obs))]
    return ad.AnnData(np.vstack([r[3] for r in rows]).astype(np.float32), obs=obs, var=pd.DataFrame(index=var_names))


def requests(s: dict, adata: ad.AnnData) -> list[tuple[str, str, str, str]]:
    """(split, condition, dose, line) to predict."""
    doses = sorted({d for d in adata.obs[DOSE].unique() if "+" not in d and d != "0"}, key=float)
    out = [("dose_interpolation", c, "1", line) for c in s["interp"] for line in s["lines"]]
    out += [("dose_extrapolation", c, "100", line) for c in s["extrap"] for line in s["lines"]]
    out += [("unseen_compound", c, d, line) for c in s["unseen"] for d in doses for line in s["lines"]]
    out += [("unseen_combination", c, d, line) for c, d in s["combos"] for line in s["lines"]]
    singles = s["interp"] + s["extrap"]
    out += [("unseen_line", c, d, s["new_line"]) for c in singles for d in doses]
    present = set(map(tuple, adata.obs[[KEY, DOSE, LINE]].astype(str).drop_duplicates().to_numpy()))
    return [r for r in out if r[1:] in present]


def baselines(req, train: ad.AnnData, full: ad.AnnData, features: pd.DataFrame, means: Means) -> dict:
    """Baseline predictions per method: {method: [(condition, dose, line, mean)]}."""
    split_, cond, dose, line = req
    ctrl = full_control(full, line)
    out: dict[str, np.ndarray | None] = {"NoChange": np.zeros_like(ctrl)}
    seen = sorted({k[0] for k in means.means if k[0] not in (CONTROL, DISEASE) and "+" not in k[0]})
    lines = sorted({k[2] for k in means.means})
    if split_ in ("dose_interpolation", "dose_extrapolation"):
        curve = sorted(
            (float(k[1]), means.delta(*k)) for k in means.means if k[0] == cond and k[2] == line and k[1] != "0"
        )
        x = np.array([c[0] for c in curve])
        y = np.stack([c[1] for c in curve])
        for name, axis in (("LogDoseLinear", np.log(x)), ("LogDoseLinear(1+dose)", np.log1p(x))):
            at = np.log(float(dose)) if name == "LogDoseLinear" else np.log1p(float(dose))
            slope = ((axis - axis.mean())[:, None] * (y - y.mean(0))).sum(0) / ((axis - axis.mean()) ** 2).sum()
            out[name] = y.mean(0) + slope * (at - axis.mean())
        out["NearestDose"] = y[int(np.argmin(np.abs(np.log(x) - np.log(float(dose)))))]
    if split_ in ("unseen_compound", "dose_interpolation", "dose_extrapolation"):
        deltas = [means.delta(c, dose, line) for c in seen if c != cond]
        deltas = [d for d in deltas if d is not None]
        out["TrainMean"] = np.mean(deltas, axis=0) if deltas else None
    if split_ == "unseen_compound":
        f = features.loc[[c for c in seen if c != cond]]
        sims = (f.to_numpy() @ features.loc[cond].to_numpy()) / (
            np.linalg.norm(f.to_numpy(), axis=1) * np.linalg.norm(features.loc[cond].to_numpy()) + 1e-12
        )
        for c in f.index[np.argsort(-sims)]:
            d = means.delta(c, dose, line)
            if d is not None:
                out["NearestFeatures"] = d
                break
    if split_ == "unseen_combination":
        parts = [means.delta(g, x, line) for g, x in zip(cond.split("+"), dose.split("+"), strict=True)]
        out["Additive"] = None if any(p is None for p in parts) else np.sum(parts, axis=0)
    if split_ == "unseen_line":
        others = [means.delta(cond, dose, other) for other in lines]
        others = [d for d in others if d is not None]
        out["OtherLines"] = np.mean(others, axis=0) if others else None
        deltas = [means.delta(c, dose, other) for c in seen for other in lines]
        out["TrainMean"] = np.mean([d for d in deltas if d is not None], axis=0)
    return {k: ctrl + v for k, v in out.items() if v is not None}


_CONTROL_CACHE: dict = {}


def full_control(full: ad.AnnData, line: str) -> np.ndarray:
    """Mean log expression of a line's control cells (the new line's are given at prediction, as to BioJEPA)."""
    if line not in _CONTROL_CACHE:
        rows = ((full.obs[KEY] == CONTROL) & (full.obs[LINE] == line)).to_numpy()
        X = full.X[rows]
        _CONTROL_CACHE[line] = np.asarray(X.mean(0)).ravel()
    return _CONTROL_CACHE[line]


def biojepa_predictions(model, reqs, full, new_line) -> list[tuple]:
    """BioJEPA's predicted means, batched per (dose, line) and split."""
    frame = pd.DataFrame(reqs, columns=["split", KEY, DOSE, LINE])
    controls = full[((full.obs[KEY] == CONTROL) & (full.obs[LINE] == new_line)).to_numpy()].copy()
    rows = []
    for (dose, line), part in frame.groupby([DOSE, LINE]):
        labels = sorted(part[KEY].unique())
        kw = {"adata": controls} if line == new_line else {"covariates": {LINE: line}}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if "+" in dose:  # combinations: one call each, the dose string in the label's order
                preds = [model.predict_perturbation(c, dose=dose, **kw) for c in labels]
            else:
                preds = [model.predict_perturbation(labels, dose=float(dose), **kw)]
        for p in preds:
            for i in range(p.n_obs):
                rows.append((p.obs[KEY].iloc[i], dose, line, np.asarray(p.X[i]).ravel()))
    return rows


#: Doses every library compound is screened at.
DOSES = [1, 10, 100]


def screening(model, full, features, truth, means: Means, lines) -> list[dict]:
    """Rank the library for reversal of the disease state, per training line: BioJEPA and the observed baseline."""
    out = []
    reversers = truth["reverses_disease"].astype(bool)
    top = max(1, int(round(0.1 * len(truth))))
    for line in lines:
        start = full[((full.obs[KEY] == DISEASE) & (full.obs[LINE] == line)).to_numpy()].copy()
        target = full[((full.obs[KEY] == CONTROL) & (full.obs[LINE] == line)).to_numpy()].copy()
        best = {}  # per space, ranked by the fraction of the distance closed and by cosine (as the baseline is)
        for space in ("latent", "expression"):
            ranked = model.screen(features, target=target, adata=start, dose=DOSES, space=space)
            for column in ("score", "cosine"):
                best[space, column] = ranked.groupby(KEY)[column].max().reindex(truth.index)
            # at the top dose only, as the baseline reads each compound at its top training dose
            top_dose = ranked[np.isclose(ranked["dose"].astype(float), max(DOSES))]
            best[space, f"cosine at {max(DOSES):g} µM"] = top_dose.groupby(KEY)["cosine"].max().reindex(truth.index)
        disease_shift = np.asarray(start.X.mean(0)).ravel() - np.asarray(target.X.mean(0)).ravel()
        seen = sorted({k[0] for k in means.means if k[0] not in (CONTROL, DISEASE) and "+" not in k[0]})
        base = {}
        f = features.to_numpy()
        norms = np.linalg.norm(f, axis=1) + 1e-12
        for name in truth.index:
            source = name
            if name not in seen:
                sims = (f @ features.loc[name].to_numpy()) / (norms * np.linalg.norm(features.loc[name]) + 1e-12)
                order = [features.index[i] for i in np.argsort(-sims)]
                source = next(c for c in order if c in seen)
            doses = sorted((k[1] for k in means.means if k[0] == source and k[2] == line), key=float)
            d = means.delta(source, doses[-1], line)
            base[name] = float(d @ -disease_shift / (np.linalg.norm(d) * np.linalg.norm(disease_shift) + 1e-12))
        methods = [(f"BioJEPA ({space}, {column})", scores) for (space, column), scores in best.items()]
        methods.append(("ObservedSignature", pd.Series(base).reindex(truth.index)))
        trained = truth.index.isin(seen)
        for method, scores in methods:
            order = scores.sort_values(ascending=False).index
            out.append(
                {
                    "method": method,
                    "line": line,
                    "auroc": roc_auc_score(reversers, scores.to_numpy()),
                    # at most top / n_reversers when there are more reversers than places in the top 10 %
                    "recall_top10pct": float(reversers.loc[order[:top]].sum() / reversers.sum()),
                    "precision_top10pct": float(reversers.loc[order[:top]].mean()),
                    "auroc_trained": roc_auc_score(reversers[trained], scores.to_numpy()[trained]),
                    "n_reversers": int(reversers.sum()),
                    "n_untrained_reversers": int(reversers[~trained].sum()),
                }
            )
    return out


def peer_predictions(name: str, adata, s: dict, reqs, seed: int, args) -> tuple[list[tuple], dict]:
    """A peer's predicted means (condition, dose, line, mean) for ``reqs``, through the peers' adapter and runner."""
    sys.path.insert(0, str(Path(__file__).parent / "peers"))
    from _adapter import canonical
    from side_by_side import run_method

    new_line_controls = ((adata.obs[KEY] == CONTROL) & (adata.obs[LINE] == s["new_line"])).to_numpy()
    canon = canonical(adata, s["train"] | new_line_controls, [(c, line, d) for _, c, d, line in reqs],
                      covariate=LINE, dose=DOSE)  # fmt: skip
    folder = Path(tempfile.mkdtemp(prefix=f"chemical_{name}_{seed}_"))
    runner = argparse.Namespace(peer_envs=args.peer_envs, threads=args.threads, timeout=args.peer_timeout)
    pred, error = run_method(name, canon, folder, seed, args.peer_epochs, runner, None)
    if error is not None:
        raise RuntimeError(f"{name} failed on seed {seed}: {error}")
    obs = pred.obs
    rows = [(obs[KEY].iloc[i], obs["dose"].iloc[i], obs["cell_type"].iloc[i], np.asarray(pred.X[i]).ravel())
            for i in range(pred.n_obs)]  # fmt: skip
    return rows, dict(pred.uns["cost"])


def run_seed(adata, features, truth, seed: int, epochs: int, args=None) -> tuple[pd.DataFrame, pd.DataFrame]:
    s = split(adata, seed)
    train = adata[s["train"]].copy()
    scvi.settings.seed = seed
    bj.BioJEPA.setup_anndata(
        train, perturbation_key=KEY, control_value=CONTROL, dose_key=DOSE, categorical_covariate_keys=[LINE]
    )
    model = bj.BioJEPA(train, perturbation_features=features)
    start = time.time()
    model.train(max_epochs=epochs, enable_progress_bar=False)
    seconds = time.time() - start
    log.info("seed %d: %d training cells, trained in %.0f s", seed, train.n_obs, seconds)
    means = Means(train)
    _CONTROL_CACHE.clear()
    reqs = requests(s, adata)
    by_method: dict[str, list] = {"BioJEPA": biojepa_predictions(model, reqs, adata, s["new_line"])}
    for req in reqs:
        for name, mean in baselines(req, train, adata, features, means).items():
            by_method.setdefault(name, []).append((req[1], req[2], req[3], mean))
    train_s = {"BioJEPA": seconds}
    for name in getattr(args, "peers", None) or []:
        by_method[name], peer_cost = peer_predictions(name, adata, s, reqs, seed, args)
        train_s[name] = peer_cost["train_seconds"]
        log.info("seed %d: %s trained %d epochs in %.0f s", seed, name, peer_cost["epochs"], train_s[name])
    split_of = {(c, d, line): sp for sp, c, d, line in reqs}
    frames = []
    for name, rows in by_method.items():
        pred = _pred(rows, adata.var_names)
        scores = bj.metrics.evaluate(pred, adata, EVAL, f"{CONTROL}@0", [LINE])
        keys = list(zip(pred.obs[KEY], pred.obs[DOSE], pred.obs[LINE], strict=True))
        frames.append(
            scores.assign(method=name, seed=seed, split=[split_of[k] for k in keys], train_s=train_s.get(name))
        )
    screen = pd.DataFrame(screening(model, adata, features, truth, means, s["lines"])).assign(seed=seed)
    return pd.concat(frames, ignore_index=True), screen


def kang(seed: int, epochs: int) -> pd.DataFrame:
    """IFN-beta as a one-compound screen: its response in each Kang cell type, held out in turn (its controls kept).

    Per held-out cell type the model is trained on every other cell (the type's control cells included) and predicts
    the stimulated mean of that type; baselines: the mean stimulation shift of the other types (``OtherTypes``) and
    no change. Log-normalized expression; scored like the simulated screen.
    """
    full = bj.datasets.kang2018_ifnb()
    sc.pp.normalize_total(full, target_sum=1e4)
    sc.pp.log1p(full)
    full.obs[KEY] = np.where(full.obs["group_id"].astype(str) == "stim", "IFNB", CONTROL)
    full.obs[LINE] = full.obs["cluster_id"].astype(str)
    frames = []
    for cell_type in sorted(full.obs[LINE].unique()):
        held = ((full.obs[LINE] == cell_type) & (full.obs[KEY] == "IFNB")).to_numpy()
        train = full[~held].copy()
        scvi.settings.seed = seed
        bj.BioJEPA.setup_anndata(train, perturbation_key=KEY, control_value=CONTROL, categorical_covariate_keys=[LINE])
        model = bj.BioJEPA(train)
        model.train(max_epochs=epochs, enable_progress_bar=False)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pred = model.predict_perturbation("IFNB", covariates={LINE: cell_type})
        X = train.X.toarray() if hasattr(train.X, "toarray") else np.asarray(train.X)
        ctrl = X[((train.obs[LINE] == cell_type) & (train.obs[KEY] == CONTROL)).to_numpy()].mean(0)
        shifts = []
        for other in sorted(set(train.obs[LINE]) - {cell_type}):
            rows = (train.obs[LINE] == other).to_numpy()
            stim, base = (
                X[rows & (train.obs[KEY] == "IFNB").to_numpy()],
                X[rows & (train.obs[KEY] == CONTROL).to_numpy()],
            )
            if len(stim) and len(base):
                shifts.append(stim.mean(0) - base.mean(0))
        means = {"BioJEPA": np.asarray(pred.X[0]).ravel(), "OtherTypes": ctrl + np.mean(shifts, 0), "NoChange": ctrl}
        for name, mean in means.items():
            obs = pd.DataFrame({KEY: ["IFNB"], LINE: [cell_type]}, index=["0"])
            p = ad.AnnData(mean[None].astype(np.float32), obs=obs, var=pd.DataFrame(index=full.var_names))
            scores = bj.metrics.evaluate(p, full, KEY, CONTROL, [LINE])
            frames.append(scores.assign(method=name, seed=seed, split="kang_unseen_cell_type"))
    return pd.concat(frames, ignore_index=True)


def common_rows(rows: pd.DataFrame) -> pd.DataFrame:
    """Per split, the (label, line, seed) units every method of the split predicted (baselines abstain where they
    have no data, e.g. Additive for a pair whose member's dose was held out), so that means compare like with like.
    """
    keys = [EVAL, LINE, "seed"]
    parts = []
    for _, part in rows.groupby("split"):
        n_methods = part["method"].nunique()
        counts = part.groupby(keys)["method"].nunique()
        full = counts[counts == n_methods].index
        parts.append(part.set_index(keys).loc[lambda d, full=full: d.index.isin(full)].reset_index())
    return pd.concat(parts, ignore_index=True)


def summarize(rows: pd.DataFrame, screen: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    rows = common_rows(rows)
    per_seed = rows.groupby(["split", "method", "seed"])[["pearson_delta_top20", "l2_top1000"]].mean()
    table = per_seed.groupby(["split", "method"]).agg(["mean", "std"]).round(3)
    table["n_units"] = rows.groupby(["split", "method"]).size() / rows["seed"].nunique()
    scores = [c for c in ("auroc", "auroc_trained", "recall_top10pct", "precision_top10pct") if c in screen]
    scr = screen.groupby(["method", "seed"])[scores].mean()
    return table, scr.groupby("method").agg(["mean", "std"]).round(3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, help="file written by simulate_dose_screen.py")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--kang", action="store_true", help="only the Kang 2018 IFN-beta one-compound case")
    parser.add_argument("--kang-epochs", type=int, default=50)
    parser.add_argument("--summarize", action="store_true", help="only summarize the rows already in --out")
    parser.add_argument("--peers", nargs="*", default=[], choices=["CPA"], help="also run these peers")
    parser.add_argument("--peer-epochs", type=int, default=400, help="peer epoch budget (CPA.train's default)")
    parser.add_argument("--peer-timeout", type=int, default=3600, help="seconds per peer run")
    parser.add_argument("--peer-envs", type=Path, default=Path(os.environ.get("PEER_ENVS", "/work/peer_envs")))
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "chemical")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    warnings.filterwarnings("ignore", message=".*isinstance\\(treespec, LeafSpec\\).*")
    for name in ("lightning", "scvi", "biojepa", "lightning.pytorch"):
        logging.getLogger(name).setLevel(logging.WARNING)
    if args.kang:
        rows = pd.concat([kang(seed, args.kang_epochs) for seed in args.seeds])
        args.out.parent.mkdir(parents=True, exist_ok=True)
        rows.to_csv(args.out.with_name(args.out.name + "_kang.csv"), index=False)
        per_seed = rows.groupby(["method", "seed"])[["pearson_delta_top20", "l2_top1000"]].mean()
        print(per_seed.groupby("method").agg(["mean", "std"]).round(3).to_string())
        return
    if args.summarize:
        rows = pd.read_csv(args.out.with_suffix(".csv"))
        screen = pd.read_csv(args.out.with_name(args.out.name + "_screen.csv"))
        table, scr = summarize(rows, screen)
        pd.set_option("display.width", 200)
        print(table.to_string())
        print(scr.to_string())
        return
    adata, features, truth = load(args.data)
    all_rows, all_screen = [], []
    for seed in args.seeds:
        rows, screen = run_seed(adata, features, truth, seed, args.epochs, args)
        all_rows.append(rows)
        all_screen.append(screen)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        pd.concat(all_rows).to_csv(args.out.with_suffix(".csv"), index=False)
        pd.concat(all_screen).to_csv(args.out.with_name(args.out.name + "_screen.csv"), index=False)
    table, scr = summarize(pd.concat(all_rows), pd.concat(all_screen))
    pd.set_option("display.width", 200)
    print(table.to_string())
    print(scr.to_string())


if __name__ == "__main__":
    main()
