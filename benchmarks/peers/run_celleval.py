"""cell-eval runner (environment of ``setup_celleval.sh``): the second judge.

Reads a JSON manifest of ``[{"id", "real", "pred"}]`` pairs of ``.h5ad`` files (cells; ``obs["condition"]``,
control ``"control"``; the same perturbations and genes in both) and writes one CSV row per (pair, perturbation)
with cell-eval's ``pearson_delta``, ``mse``, ``discrimination_score_l1`` and ``discrimination_score_l2``
(cell-eval's metric functions on its ``PerturbationAnndataPair``).
"""

from __future__ import annotations

import argparse
import json

import anndata as ad
import pandas as pd


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--manifest", required=True)
    parser.add_argument("--output", required=True)
    args = parser.parse_args()
    from cell_eval._types import PerturbationAnndataPair
    from cell_eval.metrics._anndata import discrimination_score, mse, pearson_delta

    rows = []
    for item in json.load(open(args.manifest)):
        pair = PerturbationAnndataPair(real=ad.read_h5ad(item["real"]), pred=ad.read_h5ad(item["pred"]),
                                       pert_col="condition", control_pert="control")  # fmt: skip
        scores = {
            "ce_pearson_delta": pearson_delta(pair),
            "ce_mse": mse(pair),
            "ce_discrimination_l1": discrimination_score(pair, metric="l1"),
            "ce_discrimination_l2": discrimination_score(pair, metric="l2"),
        }
        for pert in pair.perts:
            rows.append({"id": item["id"], "condition": str(pert), **{k: v[str(pert)] for k, v in scores.items()}})
    pd.DataFrame(rows).to_csv(args.output, index=False)


if __name__ == "__main__":
    main()
