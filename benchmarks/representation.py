"""Representation benchmark on Kang et al. 2018 PBMCs (5 cell types × control / IFN-β).

BioJEPA vs SCVI vs PCA(50) at the same epoch budget, over a fixed list of seeds: 5-fold kNN (k = 15)
cell-type accuracy, cell-type silhouette and effective rank of each embedding; mean ± sd over seeds.

Run ``python benchmarks/representation.py --out docs/_representation.md``.
"""

from __future__ import annotations

import argparse
import datetime
import logging
import platform
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import scanpy as sc
import scvi
import torch

import biojepa as bj
from biojepa.metrics import effective_rank, knn_accuracy, silhouette

SEEDS = (0, 1, 2)
LABEL = "cluster_id"


def _metrics(z: np.ndarray, labels) -> dict[str, float]:
    return {
        "kNN accuracy": knn_accuracy(z, labels),
        "silhouette": silhouette(z, labels),
        "effective rank": effective_rank(z),
    }


def _train_and_embed(model_cls, adata, seed: int, epochs: int, batch_size: int, labels) -> dict:
    """Register a copy of ``adata``, train ``model_cls`` with its defaults and score its latent."""
    scvi.settings.seed = seed
    a = adata.copy()
    model_cls.setup_anndata(a)
    model = model_cls(a)
    start = time.time()
    model.train(max_epochs=epochs, batch_size=batch_size, enable_progress_bar=False)
    return {
        "method": f"{model_cls.__name__} (n_latent={model.module.n_latent})",
        "seed": seed,
        "train s": time.time() - start,
        **_metrics(model.get_latent_representation(), labels),
    }


def run_seed(adata, seed: int, epochs: int, batch_size: int) -> list[dict]:
    """Embed with every method for one seed; return one row per method."""
    labels = adata.obs[LABEL].astype(str).to_numpy()
    rows = [_train_and_embed(cls, adata, seed, epochs, batch_size, labels) for cls in (bj.BioJEPA, scvi.model.SCVI)]

    a = adata.copy()
    sc.pp.normalize_total(a, target_sum=1e4)
    sc.pp.log1p(a)
    sc.pp.pca(a, n_comps=50, random_state=seed)
    rows.append({"method": "PCA (50)", "seed": seed, "train s": np.nan, **_metrics(a.obsm["X_pca"], labels)})
    return rows


def summarize(rows: list[dict]) -> pd.DataFrame:
    """Mean ± sd over seeds per method."""
    df = pd.DataFrame(rows)
    cols = ["kNN accuracy", "silhouette", "effective rank", "train s"]
    out = {}
    for method, group in df.groupby("method", sort=False):
        out[method] = {
            c: f"{group[c].mean():.3f} ± {group[c].std(ddof=1):.3f}" if group[c].notna().all() else "–" for c in cols
        }
    return pd.DataFrame(out).T


def main() -> None:
    """Run the benchmark; see the module docstring."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS))
    parser.add_argument("--out", type=Path, default=None, help="write the markdown table here")
    args = parser.parse_args()
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")

    adata = bj.datasets.kang2018_ifnb()
    rows = [row for seed in args.seeds for row in run_seed(adata, seed, args.epochs, args.batch_size)]
    table = summarize(rows)
    per_seed = pd.DataFrame(rows).round(3)
    text = "\n".join(
        [
            f"Kang 2018 PBMCs ({adata.n_obs} cells × {adata.n_vars} genes, labels `{LABEL}`), {args.epochs} epochs, "
            f"batch size {args.batch_size}, seeds {args.seeds}; {datetime.date.today()}, "
            f"{platform.processor() or 'cpu'}, "
            f"{torch.get_num_threads()} threads, biojepa {bj.__version__}, scvi-tools {scvi.__version__}.",
            "",
            f"Command: `python benchmarks/representation.py {' '.join(sys.argv[1:])}`",
            "",
            table.to_markdown(),
            "",
            "<details><summary>Per seed</summary>",
            "",
            per_seed.to_markdown(index=False),
            "",
            "</details>",
        ]
    )
    print(text)
    if args.out is not None:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
