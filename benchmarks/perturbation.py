"""Perturbation-prediction benchmark: BioJEPA vs the no-change, train-mean, additive and linear baselines.

Splits (every method is fitted on the same training cells and scored by :func:`biojepa.metrics.evaluate`):

- ``norman_doubles``: the 5 Norman 2019 doubles of the PerturBench devel file whose two singles are present
  (KLF1+MAP2K6, KLF1+TGFBR2, MAP2K3+MAP2K6, MAP2K3+SLC38A2, MAPK1+TGFBR2) are held out.
- ``mcfaline_cross_line``: each of the 9 McFaline 2023 knockouts is held out in one of the 3 glioma lines (3 per
  line, assignment shuffled by the seed) while seen in the other two. Run in the same training run as
  ``norman_doubles`` (different cells), with the Norman CRISPRa data as extra context.
- ``norman_unseen_singles``: leave-one-gene-out singles in K562. Only genes with a token after removal can be
  predicted by BioJEPA: the one measured gene (TMSB4X) and the 9 genes also perturbed in the McFaline lines (their
  learned tokens come from CRISPRi data there). These 10 genes are split into 2 folds (seeded); each fold removes
  every Norman cell whose perturbation contains a fold gene (singles and doubles).
- ``mcfaline_new_line`` (``--new-line``): one glioma line left out of training entirely (protocol
  ``unseen_context``); its knockouts are predicted from its control cells, given at prediction.
- ``sergio_doubles_interacting`` / ``sergio_doubles_other`` / ``sergio_unseen_singles`` (``--sergio``): the
  2,000-gene sergio-rs screen of ``benchmarks/simulate_screen.py`` with 200 doubles, half picked for a large true
  interaction (log1p-normalized); 20 % of the doubles whose singles are seen (protocol ``combo_seen2``) and 10 % of
  the single genes (``unseen_single``) held out, in one training run. For held-out singles the known network adds a
  ground-truth score: AUROC of ``|predicted delta|`` for the knocked-out gene's downstream genes; for held-out
  doubles, the fit change(AB) ≈ c_A change(A) + c_B change(B) of prediction and truth, and the interaction calls.

Metrics: mean over the held-out perturbations of each split, then mean ± sd over the seeds. The Norman doubles'
predicted interaction (prediction − additive) is compared with Norman's genetic-interaction fits.

Run ``python benchmarks/perturbation.py --seeds 0 1 2 --epochs 50 --new-line --sergio --out
benchmarks/results/perturbation.md`` (about 20 minutes per seed on 2 cores without ``--sergio``).
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import sys
import time
import warnings
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scvi

import biojepa as bj
from biojepa.baselines import Additive, Linear, NoChange, TrainMean
from biojepa.tl import InteractionFit, call_interaction, fit_interaction

sys.path.insert(0, str(Path(__file__).parent))
from _common import cpu_model, quiet

SEEDS = (0, 1, 2)
KEY, CONTROL, COV = "condition", "control", "cell_type"
NORMAN_DOUBLES = ["KLF1+MAP2K6", "KLF1+TGFBR2", "MAP2K3+MAP2K6", "MAP2K3+SLC38A2", "MAPK1+TGFBR2"]
METRICS = ["pearson_delta", "pearson_delta_top20", "mse_top20", "direction_error_top20", "l2_top1000",
           "discrimination", "energy_distance"]  # fmt: skip
BASELINES = {"NoChange": NoChange, "TrainMean": TrainMean, "Additive": Additive, "Linear": Linear}


def _genes(label: str) -> set[str]:
    return set() if label == CONTROL else set(label.split("+"))


MODEL_KWARGS: dict = {}


#: With ``--unanchored``, BioJEPA's predictions without anchoring (``anchor=False``: a seen member is its learned,
#: decoded effect, not its observed change) are scored too, under this name.
LEARNED = "BioJEPA (learned effects)"
UNANCHORED = False


class _Unanchored:
    """A trained BioJEPA predicting with ``anchor=False``, in the baselines' calling convention."""

    def __init__(self, model):
        self.model = model

    def predict_perturbation(self, labels, covariates=None, **kwargs):
        return self.model.predict_perturbation(labels, covariates=covariates, anchor=False, **kwargs)


def _fit_predict(train, full, requests, seed, epochs, setup_kwargs, extra=None, reference=None) -> list[pd.DataFrame]:
    """Train BioJEPA and the baselines on ``train``; score predictions of ``requests`` [(split, label, group)].

    ``reference``: control cells of a context absent from ``train``, given to BioJEPA at prediction (``adata=``) and
    added to the baselines' fitting data (so they know its control mean; they borrow its deltas from other contexts).
    """
    scvi.settings.seed = seed
    a = train.copy()
    bj.BioJEPA.setup_anndata(a, perturbation_key=KEY, control_value=CONTROL, **setup_kwargs)
    model = bj.BioJEPA(a, **MODEL_KWARGS)
    start = time.time()
    model.train(max_epochs=epochs, enable_progress_bar=False)
    seconds = time.time() - start
    cov_keys = list(setup_kwargs.get("categorical_covariate_keys") or [])
    base_data = train if reference is None else ad.concat([train, reference])
    methods = {"BioJEPA": None} | {
        name: cls().fit(base_data, KEY, CONTROL, cov_keys) for name, cls in BASELINES.items()
    }
    if UNANCHORED:
        methods[LEARNED] = _Unanchored(model)
    out, preds = [], {}
    frame = pd.DataFrame(requests, columns=["split", "label", "group"])
    for name, method in methods.items():
        predictor = model if method is None else method
        for (split, group), reqs in frame.groupby(["split", "group"]):
            covariates = {COV: group} if cov_keys else None
            parts = []
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                is_model = method is None or isinstance(method, _Unanchored)
                kw = {"adata": reference} if (is_model and reference is not None) else {}
                try:
                    parts.append(predictor.predict_perturbation(list(reqs["label"]), covariates=covariates, **kw))
                except ValueError:  # a gene without token/embedding: predict one by one, skip what cannot be
                    for label in reqs["label"]:
                        try:
                            parts.append(predictor.predict_perturbation(label, covariates=covariates, **kw))
                        except ValueError:
                            continue
            if not parts:
                continue
            pred = ad.concat(parts, index_unique="-")
            scores = bj.metrics.evaluate(pred, full, KEY, CONTROL, cov_keys)
            scores = scores.assign(method=name, split=split, seed=seed, label=pred.obs[KEY].to_numpy())
            for i, label in enumerate(pred.obs[KEY]):
                preds[(name, label, group)] = pred[i]
                if extra is not None:
                    extra(name, label, group, pred[i], scores, scores.index[i])
            out.append(scores)
    logging.getLogger("bench").info("seed %d: trained in %.0f s", seed, seconds)
    return out, preds


def perturbench(seed: int, epochs: int) -> tuple[list[pd.DataFrame], dict]:
    """Norman doubles + McFaline cross-line (one run) and Norman leave-one-gene-out singles (two runs)."""
    full = bj.datasets.perturbench_devel()
    rng = np.random.default_rng(seed)
    setup = {"categorical_covariate_keys": [COV], "perturbation_type_key": "perturbation_type"}
    mcf = full.obs[full.obs["dataset"] == "mcfaline23"]
    perts = sorted(set(mcf[KEY]) - {CONTROL})
    lines = sorted(set(mcf[COV]))
    order = rng.permutation(perts)
    held = {(p, lines[i // 3]) for i, p in enumerate(order)}
    is_norman = (full.obs["dataset"] == "norman19").to_numpy()
    drop = is_norman & full.obs[KEY].isin(NORMAN_DOUBLES).to_numpy()
    drop |= np.array([(c, t) in held for c, t in zip(full.obs[KEY], full.obs[COV], strict=True)])
    requests = [("norman_doubles", d, "k562") for d in NORMAN_DOUBLES]
    requests += [("mcfaline_cross_line", p, line) for p, line in sorted(held)]
    results, preds = _fit_predict(full[~drop].copy(), full, requests, seed, epochs, setup)

    measured = [g for g in {g for c in full.obs.loc[is_norman, KEY] for g in _genes(c)} if g in full.var_names]
    logo = sorted(set(measured) | set(perts))
    logo = list(rng.permutation(logo))
    for fold in (logo[: len(logo) // 2], logo[len(logo) // 2 :]):
        drop = is_norman & np.array([bool(_genes(c) & set(fold)) for c in full.obs[KEY]])
        reqs = [("norman_unseen_singles", g, "k562") for g in fold]
        res, _ = _fit_predict(full[~drop].copy(), full, reqs, seed, epochs, setup)
        results += res
    return results, preds


def new_line(seed: int, epochs: int) -> list[pd.DataFrame]:
    """A McFaline glioma line never seen in training (protocol ``unseen_context``): its knockouts predicted from its
    control cells, given at prediction."""
    full = bj.datasets.perturbench_devel()
    setup = {"categorical_covariate_keys": [COV], "perturbation_type_key": "perturbation_type"}
    mcf = (full.obs["dataset"] == "mcfaline23").to_numpy()
    split = bj.data.split_perturbations(full[mcf], KEY, CONTROL, "unseen_context", seed=seed, context_key=COV)
    (line,) = split.held_out
    inside = mcf & (full.obs[COV] == line).to_numpy()
    reference = full[inside & (full.obs[KEY] == CONTROL).to_numpy()].copy()
    labels = sorted(set(full.obs.loc[inside, KEY]) - {CONTROL})
    requests = [("mcfaline_new_line", p, line) for p in labels]
    results, _ = _fit_predict(full[~inside].copy(), full, requests, seed, epochs, setup, reference=reference)
    return results


def norman_double_loo(seed: int, epochs: int) -> tuple[list[pd.DataFrame], dict]:
    """Each of the 5 Norman doubles with seen singles held out alone; the other 4 train (and identify interactions)."""
    full = bj.datasets.perturbench_devel()
    setup = {"categorical_covariate_keys": [COV], "perturbation_type_key": "perturbation_type"}
    is_norman = (full.obs["dataset"] == "norman19").to_numpy()
    results, preds = [], {}
    for double in NORMAN_DOUBLES:
        drop = is_norman & (full.obs[KEY] == double).to_numpy()
        res, pred = _fit_predict(
            full[~drop].copy(), full, [("norman_doubles_loo", double, "k562")], seed, epochs, setup
        )
        results += res
        preds.update(pred)
    return results, preds


def _norman_designs(full: bool = False) -> dict:
    """Per held-out Norman double: its singles' observed changes ``(G, 2)`` (Norman's first member first) and
    Norman's (c_first, c_second); with ``full``, also its name in Norman's tables and its observed change."""
    devel = bj.datasets.perturbench_devel()
    gi = bj.datasets.norman2019_gi_tables()["regr_fits_final"]
    obs = devel[devel.obs["dataset"] == "norman19"]
    X = np.asarray(obs.X.todense()) if hasattr(obs.X, "todense") else np.asarray(obs.X)
    means = {c: X[(obs.obs[KEY] == c).to_numpy()].mean(0) for c in obs.obs[KEY].unique()}
    ctrl = means[CONTROL]
    out = {}
    for double in NORMAN_DOUBLES:
        a, b = sorted(double.split("+"))
        name = f"{a}_{b}" if f"{a}_{b}" in gi.index else f"{b}_{a}"
        first, second = name.split("_")
        design = np.stack([means[first] - ctrl, means[second] - ctrl], 1)
        norman = (float(gi.loc[name, "coef_first"]), float(gi.loc[name, "coef_second"]))
        observed = means.get(double, means.get(f"{b}+{a}")) - ctrl
        out[double] = (design, norman, name, observed) if full else (design, norman)
    return out


def gi_agreement(preds_by_seed: list[dict]) -> pd.DataFrame:
    """Interaction coefficients of the held-out Norman doubles: Norman's fit vs fits of observed/predicted deltas.

    Following Norman et al. (2019), a double's mean expression change is regressed on its two singles' observed
    changes, ``delta_ab ~ c_a delta_a + c_b delta_b`` (least squares over the 500 genes); additive is
    ``c_a = c_b = 1``. Also the Pearson correlation, over the top-20 DE genes of the double, of the predicted
    interaction (prediction − additive) with the observed interaction (observed − additive).
    """
    gi = bj.datasets.norman2019_gi_tables()["regr_fits_final"]
    rows = []
    for double, (design, _, name, observed) in _norman_designs(full=True).items():
        de = np.argsort(-np.abs(observed))[:20]
        row = {
            "double": double,
            "Norman c_first": gi.loc[name, "coef_first"],
            "Norman c_second": gi.loc[name, "coef_second"],
        }
        row["observed c_first"], row["observed c_second"] = np.linalg.lstsq(design, observed, rcond=None)[0]
        ca, cb, r = gi.loc[name, ["coef_first", "coef_second", "corr_fit"]]
        norman_fit = InteractionFit(
            ca, cb, np.hypot(ca, cb) / np.sqrt(2), max(abs(ca), abs(cb)) / min(abs(ca), abs(cb)), r
        )
        row["Norman call"] = call_interaction(norman_fit)
        row["observed call"] = call_interaction(fit_interaction(observed, design[:, 0], design[:, 1]))
        for method in ("BioJEPA", LEARNED, "Additive", "Linear"):
            coefs, corr, deltas = [], [], []
            for preds in preds_by_seed:
                pred = preds.get((method, double, "k562"))
                if pred is None:
                    continue
                delta = np.asarray(pred.layers["delta"])[0]
                deltas.append(delta)
                coefs.append(np.linalg.lstsq(design, delta, rcond=None)[0])
                inter = delta - design.sum(1)
                if np.abs(inter[de]).max() > 1e-4:
                    corr.append(np.corrcoef(inter[de], (observed - design.sum(1))[de])[0, 1])
            if coefs:
                c = np.mean(coefs, 0)
                row[f"{method} c_first"], row[f"{method} c_second"] = c
                row[f"{method} interaction r"] = np.mean(corr) if corr else np.nan
                row[f"{method} call"] = call_interaction(
                    fit_interaction(np.mean(deltas, 0), design[:, 0], design[:, 1])
                )
        rows.append(row)
    return pd.DataFrame(rows).set_index("double")


def gi_per_seed(preds_by_seed: list[dict], seeds: list[int]) -> pd.DataFrame:
    """Per seed, held-out Norman double and method: the fitted (c_first, c_second), their distance to Norman's, and
    the call next to Norman's and to the devel data's own (the fit of ``gi_agreement``, one seed at a time)."""
    table = gi_agreement([])  # Norman's and the observed fits, with no method
    designs = _norman_designs()
    rows = []
    for seed, preds in zip(seeds, preds_by_seed, strict=True):
        for double, (design, norman) in designs.items():
            for method in ("BioJEPA", LEARNED, "Additive", "Linear"):
                pred = preds.get((method, double, "k562"))
                if pred is None:
                    continue
                fit = fit_interaction(np.asarray(pred.layers["delta"])[0], design[:, 0], design[:, 1])
                rows.append({
                    "seed": seed, "double": double, "method": method, "c_first": fit.c_a, "c_second": fit.c_b,
                    "distance to Norman": np.hypot(fit.c_a - norman[0], fit.c_b - norman[1]),
                    "distance of (1, 1)": np.hypot(1 - norman[0], 1 - norman[1]),
                    "call": call_interaction(fit), "Norman call": table.loc[double, "Norman call"],
                    "observed call": table.loc[double, "observed call"],
                })  # fmt: skip
    return pd.DataFrame(rows)


def summarize_gi(rows: pd.DataFrame) -> pd.DataFrame:
    """Per method, mean ± sd over seeds of: the distance of its (c_first, c_second) to Norman's, the share of
    doubles where it is closer than additive's (1, 1), and the shares of calls agreeing with Norman's and with the
    devel data's."""
    rows = rows.assign(
        closer=rows["distance to Norman"] < rows["distance of (1, 1)"] - 1e-6,  # additive: (1, 1) to float32 rounding
        agrees_norman=rows["call"] == rows["Norman call"],
        agrees_observed=rows["call"] == rows["observed call"],
    )
    cols = ["distance to Norman", "closer", "agrees_norman", "agrees_observed"]
    per_seed = rows.groupby(["method", "seed"])[cols].mean()
    mean, sd = per_seed.groupby("method").mean(), per_seed.groupby("method").std()
    out = mean.map(lambda v: f"{v:.3f}") + " ± " + sd.map(lambda v: f"{v:.3f}")
    return out.rename(columns={"closer": "closer than (1, 1)", "agrees_norman": "call = Norman's",
                               "agrees_observed": "call = devel data's"})  # fmt: skip


SIM_ARGS = ["--n-doubles", "200", "--cells-per-condition", "80", "--no-clean-layer"]


def sergio(seed: int, epochs: int, path: Path | None = None) -> tuple[list[pd.DataFrame], pd.DataFrame]:
    """Held-out doubles (protocol ``combo_seen2``) and unseen singles (``unseen_single``) on the simulated screen.

    The screen: 2,000 genes, 120 singles, 200 doubles (half picked for a large true interaction), 80 cells each.
    Returns the scores and, per held-out double and method, the interaction fit against the truth's.
    """
    import scanpy as sc
    from simulate_screen import main as simulate_screen

    raw = ad.read_h5ad(path if path is not None else simulate_screen(SIM_ARGS))
    full = ad.AnnData(
        raw.X.copy(), obs=raw.obs[["perturbation"]].rename(columns={"perturbation": KEY}), var=raw.var[[]]
    )
    sc.pp.normalize_total(full, target_sum=1e4)
    sc.pp.log1p(full)
    doubles = bj.data.split_perturbations(full, KEY, CONTROL, "combo_seen2", seed=seed, fraction=0.2)
    singles = bj.data.split_perturbations(full, KEY, CONTROL, "unseen_single", seed=seed, fraction=0.1)
    train = doubles.train & singles.train
    held_doubles = [d for d in doubles.held_out if not (_genes(d) & set(singles.held_out))]
    requests = [("sergio_doubles", d, "all") for d in held_doubles]
    requests += [("sergio_unseen_singles", g, "all") for g in singles.held_out]
    edges = raw.uns["grn_edges"]
    downstream = _downstream(edges)
    genes = list(full.var_names)
    picks = raw.uns["conditions"]
    picks = pd.DataFrame(picks) if not isinstance(picks, pd.DataFrame) else picks
    interacting = {str(k) for k, v in zip(picks.index, picks["interacting_pick"], strict=True) if bool(v)}

    def network_auc(name, label, group, pred, scores, row):
        if "+" in label:
            scores.loc[row, "split"] = "sergio_doubles_interacting" if label in interacting else "sergio_doubles_other"
            return
        from sklearn.metrics import roc_auc_score

        y = np.isin(genes, list(downstream.get(label, ())))
        y[genes.index(label)] = False
        if 0 < y.sum() < len(y):
            scores.loc[row, "network_auroc"] = roc_auc_score(y, np.abs(np.asarray(pred.layers["delta"])[0]))

    results, preds = _fit_predict(full[train].copy(), full, requests, seed, epochs, {}, extra=network_auc)
    steady = raw.uns.get("steady_state")
    return results, sim_interactions(full, preds, held_doubles, interacting, seed, steady)


N_INTERACTION_GENES = 200


def sim_interactions(full, preds, held_doubles, interacting, seed, steady=None) -> pd.DataFrame:
    """Per held-out double and method: (c_a, c_b) of prediction and truth and their calls.

    The truth is the simulation's noise-free steady state (``steady``: ``uns["steady_state"]`` of the screen,
    normalized and log1p-transformed like the cells), so a double's coefficients are not those of sampling noise;
    the fit runs over the ``N_INTERACTION_GENES`` genes most changed by the double or its singles in the truth, and
    predictions are fitted on the same noise-free single changes. Without ``steady``, observed means on all genes.
    """
    if steady is not None:
        labels = np.asarray(steady["perturbation"]).astype(str)
        mean = np.asarray(steady["mean"], np.float64)
        logs = np.log1p(mean / mean.sum(1, keepdims=True) * 1e4)
        by_label = dict(zip(labels, logs, strict=True))

        def change(label):
            return by_label[label] - by_label[CONTROL]
    else:
        X = np.asarray(full.X.todense()) if hasattr(full.X, "todense") else np.asarray(full.X)
        obs_labels = full.obs[KEY].to_numpy()
        ctrl = X[obs_labels == CONTROL].mean(0)

        def change(label):
            return X[obs_labels == label].mean(0) - ctrl

    rows = []
    for double in held_doubles:
        a, b = sorted(_genes(double))
        da, db, dab = change(a), change(b), change(double)
        genes = np.arange(len(da))
        if steady is not None:
            genes = np.argsort(-np.max(np.abs(np.stack([da, db, dab])), 0))[:N_INTERACTION_GENES]
        truth = fit_interaction(dab[genes], da[genes], db[genes])
        for method in ["BioJEPA", LEARNED, *BASELINES]:
            pred = preds.get((method, double, "all"))
            if pred is None:
                continue
            fit = fit_interaction(np.asarray(pred.layers["delta"])[0][genes], da[genes], db[genes])
            rows.append({
                "seed": seed, "double": double, "interacting": double in interacting, "method": method,
                "c_a": fit.c_a, "c_b": fit.c_b, "truth c_a": truth.c_a, "truth c_b": truth.c_b,
                "coef error": np.hypot(fit.c_a - truth.c_a, fit.c_b - truth.c_b),
                "additive coef error": np.hypot(1 - truth.c_a, 1 - truth.c_b),
                "call": call_interaction(fit), "truth call": call_interaction(truth),
            })  # fmt: skip
    return pd.DataFrame(rows)


def summarize_interactions(table: pd.DataFrame) -> pd.DataFrame:
    """Coefficient error and call accuracy vs truth, per method and double kind: mean ± sd over seeds."""
    table = table.assign(correct=table["call"] == table["truth call"], no_interaction=table["truth call"] == "additive")
    per_seed = table.groupby(["interacting", "method", "seed"])[["coef error", "correct", "no_interaction"]].mean()
    mean, sd = per_seed.groupby(["interacting", "method"]).mean(), per_seed.groupby(["interacting", "method"]).std()
    out = mean.map(lambda v: f"{v:.3f}") + " ± " + sd.map(lambda v: f"{v:.3f}")
    return out.rename(columns={"correct": "call accuracy", "no_interaction": "accuracy of calling 'additive'"})


def _downstream(edges: pd.DataFrame) -> dict[str, set[str]]:
    """Every gene reachable from each regulator in the true network."""
    cols = list(edges.columns)
    src, dst = ("regulator", "target") if "regulator" in cols else (cols[0], cols[1])
    children: dict[str, set[str]] = {}
    for s, d in zip(edges[src], edges[dst], strict=True):
        children.setdefault(str(s), set()).add(str(d))
    out = {}
    for gene in children:
        seen, stack = set(), [gene]
        while stack:
            for child in children.get(stack.pop(), ()):
                if child not in seen:
                    seen.add(child)
                    stack.append(child)
        out[gene] = seen
    return out


def summarize(results: pd.DataFrame) -> pd.DataFrame:
    """Mean over held-out perturbations per (split, method, seed), then mean ± sd over seeds."""
    metrics = [m for m in [*METRICS, "network_auroc"] if m in results]
    per_seed = results.groupby(["split", "method", "seed"])[metrics].mean()
    counts = results.groupby(["split", "method", "seed"]).size().groupby(["split", "method"]).mean()
    mean, sd = per_seed.groupby(["split", "method"]).mean(), per_seed.groupby(["split", "method"]).std()
    table = mean.map(lambda v: f"{v:.3f}") + " ± " + sd.map(lambda v: f"{v:.3f}")
    table = table.where(mean.notna(), "n/a")
    table.insert(0, "n", counts.astype(int))
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS))
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--sergio", action="store_true", help="also run the simulated 2,000-gene screen")
    parser.add_argument("--skip-perturbench", action="store_true")
    parser.add_argument(
        "--norman-loo", action="store_true", help="also hold out each Norman double alone (5 runs per seed)"
    )
    parser.add_argument("--model-kwargs", type=json.loads, default={}, help="e.g. '{\"n_latent\": 64}'")
    parser.add_argument("--new-line", action="store_true", help="also a McFaline line never seen in training")
    parser.add_argument("--sergio-path", type=Path, default=None, help="a screen written by simulate_screen.py")
    parser.add_argument("--unanchored", action="store_true", help="also score BioJEPA with anchor=False")
    parser.add_argument("--out", type=Path, default=None, help="write a markdown report here")
    args = parser.parse_args()
    global UNANCHORED
    UNANCHORED = args.unanchored
    MODEL_KWARGS.update(args.model_kwargs)
    quiet()
    logging.getLogger("bench").setLevel(logging.INFO)
    logging.basicConfig(format="%(message)s")
    start = time.time()
    results, preds_by_seed, loo_preds, sim_gi = [], [], [], []
    for seed in args.seeds:
        if not args.skip_perturbench:
            res, preds = perturbench(seed, args.epochs)
            results += res
            preds_by_seed.append(preds)
        if args.norman_loo:
            res, preds = norman_double_loo(seed, args.epochs)
            results += res
            loo_preds.append(preds)
        if args.new_line:
            results += new_line(seed, args.epochs)
        if args.sergio:
            res, gi = sergio(seed, args.epochs, args.sergio_path)
            results += res
            sim_gi.append(gi)
    results = pd.concat(results, ignore_index=True)
    table = summarize(results)
    lines = [
        f"Command: `python benchmarks/perturbation.py {' '.join(sys.argv[1:])}`",
        f"Date: {datetime.date.today()}; machine: {cpu_model()}; seeds {args.seeds}; {args.epochs} epochs; "
        f"total {time.time() - start:.0f} s.",
        "",
        table.to_markdown(),
    ]
    norman_gi = gi_per_seed(preds_by_seed, args.seeds) if preds_by_seed else pd.DataFrame()
    if preds_by_seed:
        lines += ["", "Interaction coefficients of the held-out Norman doubles:", "",
                  gi_agreement(preds_by_seed).round(3).to_markdown(), "",
                  "Per seed, then mean ± sd over seeds: distance of the fitted coefficients to Norman's, share of "
                  "doubles closer than additive's (1, 1), share of calls agreeing:", "",
                  summarize_gi(norman_gi).to_markdown()]  # fmt: skip
    if loo_preds:
        lines += ["", "Interaction coefficients, each double held out alone:", "",
                  gi_agreement(loo_preds).round(3).to_markdown()]  # fmt: skip
    if sim_gi:
        sim_gi = pd.concat(sim_gi, ignore_index=True)
        lines += ["", "Simulated screen, held-out doubles: interaction fit and call vs truth:", "",
                  summarize_interactions(sim_gi).to_markdown()]  # fmt: skip
    report = "\n".join(lines)
    print(report)
    if args.out is not None:
        args.out.write_text(report + "\n")
        results.to_csv(args.out.with_suffix(".csv"), index=False)
        if len(sim_gi):
            sim_gi.to_csv(args.out.with_name(args.out.stem + "_interactions.csv"), index=False)
        if len(norman_gi):
            norman_gi.to_csv(args.out.with_name(args.out.stem + "_norman_gi.csv"), index=False)


if __name__ == "__main__":
    main()
