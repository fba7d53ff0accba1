"""Main job: embed the PerturBench Norman 2019 + McFaline 2023 Perturb-seq cells with BioJEPA and predict perturbations.

Loads the real file through :mod:`biojepa.datasets`, registers it with its perturbations (cell line as covariate,
CRISPRa/CRISPRi as perturbation type), holds out the Norman double KLF1+MAP2K6 in K562 and the knockout SGK1 in
the U87MG line (seen in the two other lines), trains BioJEPA, stores the latent in ``adata.obsm["X_biojepa"]``, runs
scanpy neighbors + UMAP on it, saves UMAP PNGs coloured by condition and by cell line, predicts the held-out
perturbations (scored against the observed cells next to the additive, train-mean and no-change baselines; rows say
whether they are "predicted" or "observed", a seen single returned as its observed mean being shown for contrast),
and saves the predictions, the model, the annotated AnnData and the training history.

Run ``python scripts/run_main.py --out results/main`` (about 2 minutes on 2 CPU cores).
"""

from __future__ import annotations

import argparse
import logging
import time
import warnings
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import anndata as ad
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import scanpy as sc
import scvi
from sklearn.metrics import silhouette_score

import biojepa as bj


def main() -> None:
    """Run the job; see the module docstring."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("results/main"), help="output folder")
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--n-latent", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    # Lightning's own deprecation notice about torch's pytree API (raised inside Lightning, nothing to act on here).
    warnings.filterwarnings("ignore", message=".*isinstance\\(treespec, LeafSpec\\).*")
    args.out.mkdir(parents=True, exist_ok=True)
    scvi.settings.seed = args.seed
    start = time.time()

    full = bj.datasets.perturbench_devel()
    print(f"Loaded {full.n_obs} cells x {full.n_vars} genes ({full.obs['dataset'].nunique()} screens).")
    held_out = [("KLF1+MAP2K6", "k562"), ("SGK1", "U87MG")]
    held = np.zeros(full.n_obs, dtype=bool)
    for label, line in held_out:
        held |= ((full.obs["condition"] == label) & (full.obs["cell_type"] == line)).to_numpy()
    adata = full[~held].copy()
    setup = {"perturbation_key": "condition", "control_value": "control", "categorical_covariate_keys": ["cell_type"]}
    bj.BioJEPA.setup_anndata(adata, perturbation_type_key="perturbation_type", **setup)
    model = bj.BioJEPA(adata, n_latent=args.n_latent)
    model.train(max_epochs=args.epochs, check_val_every_n_epoch=5)
    model.get_latent_representation(key_added="X_biojepa")

    preds = {"BioJEPA": [model.predict_perturbation(label, covariates={"cell_type": line}) for label, line in held_out]}
    preds["BioJEPA"].append(model.predict_perturbation("KLF1", covariates={"cell_type": "k562"}, observed=True))
    for name in ("Additive", "TrainMean", "NoChange"):
        baseline = getattr(bj.baselines, name)().fit(adata, "condition", "control", ["cell_type"])
        preds[name] = [baseline.predict_perturbation(label, covariates={"cell_type": line}) for label, line in held_out]
    rows = []
    for name, parts in preds.items():
        for p in parts:
            score = bj.metrics.evaluate(p, full, "condition", "control", ["cell_type"])
            source = p.obs["source"].to_numpy() if "source" in p.obs else ["predicted"] * p.n_obs
            rows.append(score.assign(method=name, source=source))
    cols = ["method", "condition", "cell_type", "source", "pearson_delta_top20", "l2_top1000"]
    scores = pd.concat(rows)[cols].sort_values(["condition", "method"])
    pred = ad.concat(preds["BioJEPA"], index_unique="-")
    pred_path = args.out / "predictions.h5ad"
    pred.write_h5ad(pred_path)

    sc.pp.neighbors(adata, use_rep="X_biojepa")
    sc.tl.umap(adata)
    pngs = []
    for key, title in [("condition", "condition"), ("cell_type", "cell line")]:
        fig = sc.pl.umap(adata, color=key, title=f"BioJEPA latent, coloured by {title}", show=False, return_fig=True)
        path = args.out / f"umap_{key}.png"
        fig.savefig(path, dpi=120, bbox_inches="tight")
        plt.close(fig)
        pngs.append(path)

    model_dir = args.out / "model"
    model.save(model_dir, overwrite=True)
    h5ad = args.out / "perturbench_biojepa.h5ad"
    adata.write_h5ad(h5ad)
    history = args.out / "history.csv"
    model.history["train_loss"].join([v for k, v in model.history.items() if k != "train_loss"], how="outer").to_csv(
        history
    )

    z = adata.obsm["X_biojepa"]
    rank = model.history["effective_rank_train"].iloc[-1, 0]
    print(f"\nDone in {time.time() - start:.0f} s.")
    print(
        f"Cell-line silhouette of the latent: {silhouette_score(z, adata.obs['cell_type']):.3f}; "
        f"effective rank (last epoch): {rank:.1f} of {args.n_latent}."
    )
    print("\nHeld out of training: KLF1+MAP2K6 in K562 (both singles seen), SGK1 in U87MG (seen in T98G and A172).")
    print("KLF1 in K562 was seen: its row returns the observed mean (source 'observed'), not a prediction.")
    print(scores.round(3).to_string(index=False))
    print(f"\nLatent:   adata.obsm['X_biojepa'] {z.shape} -> {h5ad}")
    print(f"Predictions: {pred_path} (X, layers['delta'], obsm['X_biojepa'], obs['source'])")
    for path in pngs:
        print(f"UMAP:     {path}")
    print(f"Model:    {model_dir} (reload with bj.BioJEPA.load('{model_dir}', adata=adata))")
    print(f"History:  {history}")


if __name__ == "__main__":
    main()
