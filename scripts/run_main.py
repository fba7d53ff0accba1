"""Main job: embed the PerturBench Norman 2019 + McFaline 2023 Perturb-seq cells with BioJEPA and predict perturbations.

Loads the real file through :mod:`biojepa.datasets`, registers it with its perturbations (cell line as covariate,
CRISPRa/CRISPRi as perturbation type), holds out the Norman double KLF1+MAP2K6, trains BioJEPA, stores the latent
in ``adata.obsm["X_biojepa"]``, runs scanpy neighbors + UMAP on it, saves UMAP PNGs coloured by condition and by
cell line, predicts the held-out double and the single SGK1 in K562 (scored against the observed cells next to the
additive baseline), and saves the predictions, the model, the annotated AnnData and the training history.

Run ``python scripts/run_main.py --out results/main`` (about 1 minute on 2 CPU cores).
"""

from __future__ import annotations

import argparse
import logging
import time
import warnings
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
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
    args.out.mkdir(parents=True, exist_ok=True)
    scvi.settings.seed = args.seed
    start = time.time()

    full = bj.datasets.perturbench_devel()
    print(f"Loaded {full.n_obs} cells x {full.n_vars} genes ({full.obs['dataset'].nunique()} screens).")
    held_out = "KLF1+MAP2K6"
    adata = full[(full.obs["condition"] != held_out).to_numpy()].copy()
    setup = {"perturbation_key": "condition", "control_value": "control", "categorical_covariate_keys": ["cell_type"]}
    bj.BioJEPA.setup_anndata(adata, perturbation_type_key="perturbation_type", **setup)
    model = bj.BioJEPA(adata, n_latent=args.n_latent)
    model.train(max_epochs=args.epochs, check_val_every_n_epoch=5)
    model.get_latent_representation(key_added="X_biojepa")

    requests = [held_out, "SGK1"]
    pred = model.predict_perturbation(requests, covariates={"cell_type": "k562"})
    additive = bj.baselines.Additive().fit(adata, "condition", "control", ["cell_type"])
    base = additive.predict_perturbation(requests, covariates={"cell_type": "k562"})
    cols = ["condition", "pearson_delta_top20", "l2_top1000"]
    scores = {
        name: bj.metrics.evaluate(p, full, "condition", "control", ["cell_type"])[cols]
        for name, p in [("BioJEPA", pred), ("Additive", base)]
    }
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
    print(f"\nPredicted in K562 ({held_out} held out of training; SGK1 seen):")
    for name, table in scores.items():
        print(f"  {name}:\n" + table.round(3).to_string(index=False))
    print(f"\nLatent:   adata.obsm['X_biojepa'] {z.shape} -> {h5ad}")
    print(f"Predictions: {pred_path} (X, layers['delta'], obsm['X_biojepa'])")
    for path in pngs:
        print(f"UMAP:     {path}")
    print(f"Model:    {model_dir} (reload with bj.BioJEPA.load('{model_dir}', adata=adata))")
    print(f"History:  {history}")


if __name__ == "__main__":
    main()
