"""Table of GEARS and CPA at their default training budgets next to their reduced budgets, BioJEPA and baselines.

Reads the raw rows of the main side-by-side run (``benchmarks/results/peers.csv``: BioJEPA, the baselines and the
peers at the reduced budgets) and of the default-budget runs (``peers_default_budgets.csv``, written by
``side_by_side.py --epochs '{"GEARS": 20, "CPA": 400}'``), keeps the seeds the default-budget runs cover, and prints
one markdown table: per seed the mean over held-out requests, then mean ± sd over seeds.

Run: ``python benchmarks/peers/default_budgets.py``
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd
from _splits import SPLITS

RESULTS = Path(__file__).resolve().parents[1] / "results"
METRICS = {"pearson_delta_top20": "Pearson Δ top-20 ↑", "l2_top1000": "L2 top-1000 ↓"}
ROWS = [  # (label, source, method)
    ("BioJEPA", "main", "BioJEPA"),
    ("GEARS, 5 epochs", "main", "GEARS"),
    ("GEARS, 20 epochs (default)", "default", "GEARS"),
    ("CPA, 20 epochs", "main", "CPA"),
    ("CPA, CPA.train default (≤ 400 epochs, early stopping)", "default", "CPA"),
    ("Additive", "main", "Additive"),
    ("TrainMean", "main", "TrainMean"),
]


def table(main: pd.DataFrame, default: pd.DataFrame) -> str:
    """The markdown table over the splits and seeds of ``default``'s peer rows."""
    default = default[default.method.isin(["GEARS", "CPA"])]
    seeds = sorted(default.seed.unique())
    sources = {"main": main[main.seed.isin(seeds)], "default": default}
    rows = []
    for split in SPLITS:
        for label, source, method in ROWS:
            part = sources[source]
            part = part[(part.split == split) & (part.method == method)]
            if part.empty:
                continue
            per_seed = part.groupby("seed")[list(METRICS)].mean()
            row = {"split": split, "method": label, "seeds": len(per_seed)}
            for col, name in METRICS.items():
                m, s = per_seed[col].mean(), per_seed[col].std()
                row[name] = "n/a" if pd.isna(m) else f"{m:.3f} ± {s:.3f}"
            rows.append(row)
    return pd.DataFrame(rows).to_markdown(index=False)


def main() -> None:
    """Print the table; see the module docstring."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--main", type=Path, default=RESULTS / "peers.csv")
    parser.add_argument("--default", type=Path, default=RESULTS / "peers_default_budgets.csv")
    args = parser.parse_args()
    print(table(pd.read_csv(args.main), pd.read_csv(args.default)))


if __name__ == "__main__":
    main()
