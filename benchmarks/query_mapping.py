"""Query mapping on Kang et al. 2018 PBMCs: one sample mapped onto a model trained on the other samples.

BioJEPA (``prepare_query_anndata`` + ``load_query_data`` + fine-tuning) vs SCVI (scvi-tools' ``ArchesMixin``) on the
same split, over a fixed list of seeds: 15-NN label transfer of ``cluster_id`` from the reference cells to the query
cells in the latent (accuracy against the query's own labels), reference training time and query mapping time.
BioJEPA's row "no fine-tuning" embeds the query with the reference model itself (its batch relabelled to a reference
one), to show what the fine-tuning adds.

Run ``OMP_NUM_THREADS=1 python benchmarks/query_mapping.py --out docs/_query_mapping.md``.
"""

from __future__ import annotations

import argparse
import datetime
import logging
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import scvi
import torch

import biojepa as bj

SEEDS = (0, 1, 2)
LABEL, BATCH = "cluster_id", "sample_id"


def _transfer_accuracy(ref_z: np.ndarray, ref, query_z: np.ndarray, query, k: int) -> float:
    """Accuracy of the majority label of each query cell's ``k`` nearest reference cells."""
    ref, query = ref.copy(), query.copy()
    ref.obsm["z"], query.obsm["z"] = ref_z, query_z
    bj.tl.nearest_cells(query, ref, use_rep="z", n_neighbors=k, labels_key=LABEL, key_added="nn")
    return float((query.obs[f"nn_{LABEL}"].astype(str) == query.obs[LABEL].astype(str)).mean())


def run_biojepa(ref, query, seed: int, epochs: int, query_epochs: int, k: int) -> list[dict]:
    scvi.settings.seed = seed
    ref = ref.copy()
    bj.BioJEPA.setup_anndata(ref, batch_key=BATCH)
    model = bj.BioJEPA(ref)
    start = time.time()
    model.train(max_epochs=epochs, enable_progress_bar=False)
    train_s = time.time() - start
    ref_z = model.get_latent_representation()
    seen = query.copy()
    seen.obs[BATCH] = ref.obs[BATCH].iloc[0]
    rows = [
        {
            "method": "BioJEPA, no fine-tuning",
            "seed": seed,
            "accuracy": _transfer_accuracy(ref_z, ref, model.get_latent_representation(seen), query, k),
            "reference train s": train_s,
            "query s": np.nan,
        }
    ]
    start = time.time()
    aligned = bj.BioJEPA.prepare_query_anndata(query, model)
    qmodel = bj.BioJEPA.load_query_data(aligned, model)
    qmodel.train(max_epochs=query_epochs, enable_progress_bar=False)
    query_z = qmodel.get_latent_representation()
    rows.append(
        {
            "method": "BioJEPA, load_query_data",
            "seed": seed,
            "accuracy": _transfer_accuracy(ref_z, ref, query_z, query, k),
            "reference train s": train_s,
            "query s": time.time() - start,
        }
    )
    return rows


def run_scvi(ref, query, seed: int, epochs: int, query_epochs: int, k: int) -> dict:
    scvi.settings.seed = seed
    ref = ref.copy()
    scvi.model.SCVI.setup_anndata(ref, batch_key=BATCH)
    model = scvi.model.SCVI(ref)
    start = time.time()
    model.train(max_epochs=epochs, enable_progress_bar=False)
    train_s = time.time() - start
    ref_z = model.get_latent_representation()
    start = time.time()
    q = query.copy()
    scvi.model.SCVI.prepare_query_anndata(q, model)
    qmodel = scvi.model.SCVI.load_query_data(q, model)
    qmodel.train(max_epochs=query_epochs, plan_kwargs={"weight_decay": 0.0}, enable_progress_bar=False)
    query_z = qmodel.get_latent_representation()
    return {
        "method": "SCVI, load_query_data",
        "seed": seed,
        "accuracy": _transfer_accuracy(ref_z, ref, query_z, query, k),
        "reference train s": train_s,
        "query s": time.time() - start,
    }


def summarize(rows: list[dict]) -> pd.DataFrame:
    """Mean ± sd over seeds per method."""
    df = pd.DataFrame(rows)
    out = {}
    for method, group in df.groupby("method", sort=False):
        out[method] = {
            c: f"{group[c].mean():.3f} ± {group[c].std(ddof=1):.3f}" if group[c].notna().all() else "–"
            for c in ("accuracy", "reference train s", "query s")
        }
    return pd.DataFrame(out).T


def main() -> None:
    """Run the benchmark; see the module docstring."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--query-sample", default="stim107")
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--query-epochs", type=int, default=50)
    parser.add_argument("--k", type=int, default=15)
    parser.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS))
    parser.add_argument("--out", type=Path, default=None, help="write the markdown table here")
    args = parser.parse_args()
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    logging.getLogger("scvi").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")

    adata = bj.datasets.kang2018_ifnb()
    is_query = (adata.obs[BATCH] == args.query_sample).to_numpy()
    ref, query = adata[~is_query].copy(), adata[is_query].copy()
    rows = []
    for seed in args.seeds:
        rows += run_biojepa(ref, query, seed, args.epochs, args.query_epochs, args.k)
        rows.append(run_scvi(ref, query, seed, args.epochs, args.query_epochs, args.k))
    per_seed = pd.DataFrame(rows).round(3)
    text = "\n".join(
        [
            f"Kang 2018 PBMCs: query sample `{args.query_sample}` ({query.n_obs} cells) mapped onto a model trained on "
            f"the other samples ({ref.n_obs} cells × {adata.n_vars} genes, batch `{BATCH}`); {args.k}-NN transfer of "
            f"`{LABEL}`; reference {args.epochs} epochs, query {args.query_epochs} epochs, default architectures, "
            f"seeds {args.seeds}; {datetime.date.today()}, {torch.get_num_threads()} threads, "
            f"biojepa {bj.__version__}, scvi-tools {scvi.__version__}.",
            "",
            f"Command: `OMP_NUM_THREADS=1 python benchmarks/query_mapping.py {' '.join(sys.argv[1:])}`",
            "",
            summarize(rows).to_markdown(),
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
