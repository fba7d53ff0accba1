"""biolord runner (environment of ``setup_biolord.sh``): the biolord authors' Norman configuration on our split.

biolord decodes expression from a disentangled latent: one embedding per known attribute (here the perturbation, an
ordered attribute, and the cell type, a categorical one) and, optionally, a free per-cell code. The configuration is
that of the biolord reproducibility repository for Norman et al. (``norman_optimal_config.py``): no per-cell code
(``unknown_attributes=False``), a 32-wide latent, decoder 2 x 32, perturbation network 2 x 64, ``batch_size=32``,
validation every 5 epochs with early stopping, its learning rates and cosine schedule; its epoch count is 200.

The perturbation attribute follows the same source, which feeds GEARS' gene-ontology neighbours of each perturbed
gene: a gene's vector holds, for each gene perturbed in training, the Jaccard similarity of their GO term sets when
that gene is among its 20 most similar (GEARS' ``num_similar_genes_go_graph``), and 1 for itself; a combination sums
its genes' vectors, control is zero. The GO annotation comes from the adapter (``uns["gene2go"]``, the table of
``../shared/data/gene_priors``). A gene never perturbed in training is thus predicted from its GO neighbours; a
request whose vector is zero (no GO neighbour among the trained genes) is skipped as not predictable.

Prediction: the training control cells of the request's cell type with the request's perturbation vector, decoded and
averaged (the counterfactual ``ood`` cells of the adapter are registered with ``split="ood"`` and never trained on).
"""

from __future__ import annotations

from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
from _adapter import CONTROL, COV, KEY, from_peer_label, genes_of, write_prediction
from _runner import Timer, cost, parse_args, seed_everything

ATTRIBUTE = "perturbation_neighbors"
N_NEIGHBOURS = 20
MODULE = {"n_latent_attribute_ordered": 32, "n_latent_attribute_categorical": 16, "reconstruction_penalty": 1e4,
          "unknown_attribute_noise_param": 0.2, "attribute_dropout_rate": 0.0, "use_batch_norm": False,
          "use_layer_norm": False, "attribute_nn_width": 64, "attribute_nn_depth": 2, "decoder_width": 32,
          "decoder_depth": 2, "decoder_activation": True, "attribute_nn_activation": True,
          "unknown_attributes": False}  # fmt: skip
PLAN = {"n_epochs_warmup": 0, "latent_lr": 1e-2, "latent_wd": 1e-5, "decoder_lr": 1e-2, "decoder_wd": 1e-2,
        "attribute_nn_lr": 1e-3, "attribute_nn_wd": 4e-8, "step_size_lr": 45, "cosine_scheduler": True,
        "scheduler_final_lr": 1e-5}  # fmt: skip


def gene_vectors(trained: list[str], genes: list[str], pairs: pd.DataFrame) -> dict[str, np.ndarray]:
    """Each gene's GO-neighbour vector over the ``trained`` genes (see the module docstring)."""
    terms = {g: set(df["go_id"]) for g, df in pairs.groupby("symbol")}
    out = {}
    for gene in genes:
        mine = terms.get(gene, set())
        sim = np.array([len(mine & terms.get(t, set())) / max(len(mine | terms.get(t, set())), 1) for t in trained])
        sim[np.argsort(-sim)[N_NEIGHBOURS:]] = 0.0
        if gene in trained:
            sim[trained.index(gene)] = 1.0
        out[gene] = sim
    return out


def genes(label: str) -> list[str]:
    """The genes of a biolord label (``"ctrl"``, ``"A"``, ``"A+B"``)."""
    return genes_of(from_peer_label(str(label), "biolord"))


def encode(labels, vectors: dict[str, np.ndarray], width: int) -> np.ndarray:
    """Sum of the genes' vectors of each ``"A"`` / ``"A+B"`` label; ``"ctrl"`` is zero."""
    rows = [sum((vectors[g] for g in genes(label)), np.zeros(width)) for label in labels]
    return np.asarray(rows, dtype=np.float32)


def main() -> None:
    args = parse_args(__doc__, default_epochs=200)
    seed_everything(args.seed)
    import biolord
    import torch

    adata = ad.read_h5ad(args.input)
    requests = adata.uns.pop("requests")
    pairs = adata.uns.pop("gene2go")
    labels = adata.obs[KEY].astype(str)
    trained = sorted({g for c in labels[adata.obs["split"] != "ood"] for g in genes(c)})
    vectors = gene_vectors(trained, sorted({g for c in list(labels) + list(requests[KEY]) for g in genes(c)}), pairs)
    adata.obsm[ATTRIBUTE] = encode(labels, vectors, len(trained))
    adata.obs[COV] = adata.obs[COV].astype(str).astype("category")
    biolord.Biolord.setup_anndata(adata, ordered_attributes_keys=[ATTRIBUTE], categorical_attributes_keys=[COV])
    model = biolord.Biolord(adata, n_latent=32, module_params={**MODULE, "seed": args.seed}, split_key="split",
                            train_split="train", valid_split="valid", test_split="ood")  # fmt: skip
    n_train = int((adata.obs["split"] == "train").sum())
    log_dir = Path(args.output).resolve().parent / "biolord_log"
    with Timer() as t:
        model.train(max_epochs=args.epochs, batch_size=32, plan_kwargs=PLAN, early_stopping=True,
                    early_stopping_patience=args.epochs, check_val_every_n_epoch=5, enable_checkpointing=False,
                    default_root_dir=str(log_dir), enable_progress_bar=False, accelerator="cpu")  # fmt: skip
    history = getattr(model.training_plan, "epoch_history", None)
    epochs = history["mode"].count("train") if isinstance(history, dict) and history.get("mode") else args.epochs
    is_ctrl = (
        np.array([from_peer_label(c, "biolord") == CONTROL for c in labels]) & (adata.obs["split"] != "ood").to_numpy()
    )
    out_labels, out_types, rows = [], [], []
    for label, cell_type in requests[[KEY, COV]].itertuples(index=False, name=None):
        vector = encode([label], vectors, len(trained))
        cells = np.flatnonzero(is_ctrl & (adata.obs[COV] == cell_type).to_numpy())
        if not vector.any() or not len(cells):
            continue
        dataset = model.get_dataset(adata, indices=cells)
        dataset[ATTRIBUTE] = torch.from_numpy(np.repeat(vector, len(cells), axis=0))
        with torch.no_grad():
            mean, _ = model.module.get_expression(dataset)
        out_labels.append(label)
        out_types.append(cell_type)
        rows.append(mean.cpu().numpy().mean(0))
    X = np.vstack(rows) if rows else np.zeros((0, adata.n_vars))
    write_prediction(args.output, out_labels, out_types, X, adata.var_names, cost(t.seconds, epochs, n_train))


if __name__ == "__main__":
    main()
