"""How much of a double's additive prediction error on the simulated screen is sampling noise of the singles.

For every double of a screen written by ``simulate_screen.py`` whose two singles are measured, the observed change
of the double (mean log1p CP10k minus the control mean, on the 1,000 most expressed genes) is regressed on the sum
of its singles' observed changes through the origin: ``change(AB) ≈ c · (change(A) + change(B))``. On doubles the
simulation makes additive, ``c`` near 1 would mean the observed singles add up; ``c`` far below 1 means the sum is
dominated by the singles' sampling noise (each single's mean over its cells carries noise that adds up in the sum
but is absent from the double's own change), so a prediction that shrinks the sum, or denoises the singles, beats
the additive baseline on L2 without knowing anything about interactions. Reports, for the doubles picked for a large
true interaction and for the others: the norm ratio |change(AB)| / |sum|, ``c``, and the L2 distance of the
double's change to the sum and to ``c`` times the sum.

Run: ``python benchmarks/simulate_screen.py --n-doubles 200 --cells-per-condition 80 --no-clean-layer --out
SCREEN.h5ad`` then ``python benchmarks/doubles_noise.py SCREEN.h5ad``.
"""

from __future__ import annotations

import argparse

import anndata as ad
import numpy as np
import pandas as pd
import scanpy as sc


def _screen(path: str):
    """The screen's raw AnnData, log-normalized cells, their labels, each label's mean and the interacting doubles."""
    raw = ad.read_h5ad(path)
    full = ad.AnnData(raw.X.copy(), obs=raw.obs[["perturbation"]].copy())
    sc.pp.normalize_total(full, target_sum=1e4)
    sc.pp.log1p(full)
    X = full.X.toarray() if hasattr(full.X, "toarray") else np.asarray(full.X)
    labels = full.obs["perturbation"].astype(str).to_numpy()
    means = {label: X[labels == label].mean(0) for label in np.unique(labels)}
    picks = raw.uns["conditions"]
    picks = pd.DataFrame(picks) if not isinstance(picks, pd.DataFrame) else picks
    interacting = {str(k) for k, v in zip(picks.index, picks["interacting_pick"], strict=True) if bool(v)}
    return raw, X, labels, means, interacting


def table(path: str, n_genes: int = 1000) -> pd.DataFrame:
    """One row per measurable double: interacting pick, norm ratio, ``c``, L2 to the sum and to ``c`` x sum."""
    _, _, _, means, interacting = _screen(path)
    ctrl = means["control"]
    top = np.argsort(-ctrl)[:n_genes]
    rows = []
    for double in (label for label in means if "+" in label):
        a, b = double.split("+")
        if a not in means or b not in means:
            continue
        obs = (means[double] - ctrl)[top]
        add = (means[a] + means[b] - 2 * ctrl)[top]
        c = float(obs @ add / (add @ add))
        rows.append({"double": double, "interacting": double in interacting,
                     "norm ratio": float(np.linalg.norm(obs) / np.linalg.norm(add)), "c": c,
                     "L2 to sum": float(np.linalg.norm(obs - add)),
                     "L2 to c x sum": float(np.linalg.norm(obs - c * add))})  # fmt: skip
    return pd.DataFrame(rows)


def _fit(target: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Least-squares ``(c_a, c_b)`` of ``target ≈ c_a a + c_b b``."""
    return np.linalg.lstsq(np.stack([a, b], 1), target, rcond=None)[0]


def denoising(path: str, n_genes: int = 1000, n_interaction_genes: int = 200) -> pd.DataFrame:
    """Sum of the singles' observed changes vs the same sum with each single denoised first, per double.

    Model-free counterpart of the model's denoised composition: each single's change ``r`` is shrunk towards the
    mean change of all singles ``m`` either gene by gene (``m + max(0, 1 - v/d²) d``, ``d = r - m``, ``v`` the
    sampling variance of the single's mean; what ``predict_perturbation`` does to residuals) or by one factor per
    single (positive-part James-Stein, ``m + max(0, 1 - Σv/Σd²) d``). Scored per double on L2 over the
    ``n_genes`` most expressed genes, Pearson over the double's 20 most changed genes, and the distance of the
    Norman coefficients fitted on the noise-free singles (``uns["steady_state"]``, ``n_interaction_genes`` most
    changed genes) to the truth's.
    """
    raw, X, labels, means, interacting = _screen(path)
    ctrl = means["control"]
    top = np.argsort(-ctrl)[:n_genes]
    steady = raw.uns["steady_state"]
    mean = np.asarray(steady["mean"], np.float64)
    steady_labels = np.asarray(steady["perturbation"]).astype(str)
    logs = dict(zip(steady_labels, np.log1p(mean / mean.sum(1, keepdims=True) * 1e4), strict=True))
    singles = [label for label in means if label != "control" and "+" not in label]
    R = np.array([means[g] - ctrl for g in singles])
    V = np.array([X[labels == g].var(0, ddof=1) / (labels == g).sum() for g in singles])
    D = R - R.mean(0)
    methods = {
        "sum": R,
        "gene by gene": R.mean(0) + np.clip(1 - V / np.maximum(D**2, 1e-12), 0, 1) * D,
        "one factor per single": R.mean(0) + np.maximum(0, 1 - V.sum(1) / (D**2).sum(1))[:, None] * D,
    }
    index = {g: i for i, g in enumerate(singles)}
    rows = []
    for double in (label for label in means if "+" in label):
        a, b = double.split("+")
        if a not in index or b not in index:
            continue
        obs = means[double] - ctrl
        de = np.argsort(-np.abs(obs))[:20]
        ta, tb, tab = (logs[x] - logs["control"] for x in (a, b, double))
        genes = np.argsort(-np.max(np.abs(np.stack([ta, tb, tab])), 0))[:n_interaction_genes]
        truth = _fit(tab[genes], ta[genes], tb[genes])
        for name, M in methods.items():
            pred = M[index[a]] + M[index[b]]
            coef = _fit(pred[genes], ta[genes], tb[genes])
            rows.append({"interacting": double in interacting, "method": name,
                         "L2": float(np.linalg.norm((obs - pred)[top])),
                         "Pearson top-20": float(np.corrcoef(obs[de], pred[de])[0, 1]),
                         "coef error": float(np.linalg.norm(coef - truth))})  # fmt: skip
    return pd.DataFrame(rows)


def main() -> None:
    """Print the summary; see the module docstring."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("screen", help="an .h5ad written by simulate_screen.py")
    args = parser.parse_args()
    df = table(args.screen)
    summary = df.groupby("interacting")[["norm ratio", "c", "L2 to sum", "L2 to c x sum"]].agg(["mean", "std"])
    print(summary.round(3).to_string())
    print(df.groupby("interacting").size().to_string())
    print("\nEach single denoised before summing (mean over doubles):")
    print(denoising(args.screen).groupby(["interacting", "method"]).mean().round(3).to_string())


if __name__ == "__main__":
    main()
