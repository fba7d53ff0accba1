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


def table(path: str, n_genes: int = 1000) -> pd.DataFrame:
    """One row per measurable double: interacting pick, norm ratio, ``c``, L2 to the sum and to ``c`` x sum."""
    raw = ad.read_h5ad(path)
    full = ad.AnnData(raw.X.copy(), obs=raw.obs[["perturbation"]].copy())
    sc.pp.normalize_total(full, target_sum=1e4)
    sc.pp.log1p(full)
    X = full.X.toarray() if hasattr(full.X, "toarray") else np.asarray(full.X)
    labels = full.obs["perturbation"].astype(str).to_numpy()
    means = {label: X[labels == label].mean(0) for label in np.unique(labels)}
    ctrl = means["control"]
    top = np.argsort(-ctrl)[:n_genes]
    picks = raw.uns["conditions"]
    picks = pd.DataFrame(picks) if not isinstance(picks, pd.DataFrame) else picks
    interacting = {str(k) for k, v in zip(picks.index, picks["interacting_pick"], strict=True) if bool(v)}
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


def main() -> None:
    """Print the summary; see the module docstring."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("screen", help="an .h5ad written by simulate_screen.py")
    args = parser.parse_args()
    df = table(args.screen)
    summary = df.groupby("interacting")[["norm ratio", "c", "L2 to sum", "L2 to c x sum"]].agg(["mean", "std"])
    print(summary.round(3).to_string())
    print(df.groupby("interacting").size().to_string())


if __name__ == "__main__":
    main()
