"""ECCITE-seq protein from the RNA-only latent: does the ridge readout's column scaling decide the comparison with PCA?

``latent.py`` scores a latent's protein readout by RidgeCV on z-scored latent columns; ``multiomics.py`` fits
"ridge on 50 RNA PCs" on the PC scores as they are. Z-scoring gives every PC the same weight under the ridge
penalty, which removes the shrinkage of low-variance PCs that makes ridge on raw PCs work. This script scores the
same latents both ways: PCA(50) of log1p-CP10k HVGs (as in ``latent.py``), BioJEPA with its defaults (count readout,
200 epochs) through its context encoder (``get_latent_representation()``) and its EMA target encoder
(``encoder="target"``). Same data, folds and metric as ``latent.py`` (5-fold, mean per-protein Pearson r of the CLR).

Run ``python benchmarks/eccite_readout.py --seeds 0 1 2`` (about 4 minutes on 2 cores, 1 thread); ``--model-kwargs``
scores another configuration (e.g. ``'{"n_latent": 128}'``), ``--set shared:eccite --pca-only`` the PCA baseline on
the genes shared with Kang and HSMM (``latent.py``'s pooled comparison), and ``--out`` names the result file.
``--n-genes N`` keeps the N most variable of the set's genes (the ``highly_variable_genes`` ranking of
``_multiomics_data.select_hvgs``), for every latent, and ``--one-token-per-gene`` gives BioJEPA one token per gene
(``gene_modules`` = one label per gene) instead of its co-expression modules: the token-granularity check, run on a
small gene panel because attention over one token per gene of 2,000 genes costs 170-200x the default per epoch on
CPU.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import scanpy as sc
import scvi
import torch

import biojepa as bj

sys.path.insert(0, str(Path(__file__).parent))
from _common import quiet
from latent import _ridge_cv, load_set


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=200)
    parser.add_argument("--model-kwargs", type=json.loads, default={}, help="BioJEPA arguments, as JSON")
    parser.add_argument("--set", default="eccite", choices=["eccite", "shared:eccite"],
                        help="the 2,000 HVGs, or the genes shared with Kang and HSMM (latent.py's sets)")  # fmt: skip
    parser.add_argument("--pca-only", action="store_true", help="score the PCA latent only (no training)")
    parser.add_argument("--n-genes", type=int, default=None, help="keep the N most variable genes of the set")
    parser.add_argument("--one-token-per-gene", action="store_true", help="BioJEPA with one token per gene")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "eccite_readout.md")
    args = parser.parse_args()
    quiet()
    torch.set_num_threads(1)
    adata = load_set(args.set)
    if args.n_genes is not None:
        from _multiomics_data import select_hvgs

        adata = adata[:, select_hvgs(adata, args.n_genes)].copy()
    kwargs = dict(args.model_kwargs)
    if args.one_token_per_gene:
        kwargs["gene_modules"] = list(adata.var_names)  # one label per gene: one token per gene
    Y = adata.obsm["protein_clr"]
    rows = []
    for seed in args.seeds:
        a = adata.copy()
        sc.pp.normalize_total(a, target_sum=1e4)
        sc.pp.log1p(a)
        sc.pp.pca(a, n_comps=50, random_state=seed)
        latents = {"PCA (50)": a.obsm["X_pca"]}
        if not args.pca_only:
            scvi.settings.seed = seed
            b = adata.copy()
            bj.BioJEPA.setup_anndata(b, layer="counts")
            model = bj.BioJEPA(b, **kwargs)
            model.train(max_epochs=args.epochs, enable_progress_bar=False, accelerator="cpu", devices=1)
            latents["BioJEPA"] = model.get_latent_representation()
            latents["BioJEPA [target]"] = model.get_latent_representation(encoder="target")
        for name, Z in latents.items():
            for zscore in (True, False):
                rows.append({"seed": seed, "latent": name, "readout": "z-scored columns" if zscore else "raw columns",
                             "protein r": _ridge_cv(np.asarray(Z), Y, seed, zscore)})  # fmt: skip
    table = pd.DataFrame(rows)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.out.with_suffix(".csv"), index=False)
    summary = table.groupby(["latent", "readout"])["protein r"].agg(["mean", "std"]).round(3)
    extra = f" --model-kwargs '{json.dumps(args.model_kwargs)}'" if args.model_kwargs else ""
    extra += (f" --set {args.set}" if args.set != "eccite" else "") + (" --pca-only" if args.pca_only else "")
    extra += (f" --n-genes {args.n_genes}" if args.n_genes else "") + (
        " --one-token-per-gene" if args.one_token_per_gene else ""
    )
    command = f"`python benchmarks/eccite_readout.py --seeds {' '.join(map(str, args.seeds))}{extra}`"
    text = f"{command}\n\n{summary.to_markdown()}\n"
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
