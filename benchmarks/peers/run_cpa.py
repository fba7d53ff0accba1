"""CPA runner (environment of ``setup_cpa.sh``): CPA's documented defaults on our split.

Input: the adapter's CPA AnnData (``condition`` ``A`` / ``A+B`` / ``ctrl``, ``dose`` ``1`` / ``1+1``,
``cell_type``, ``split``: ``train``, ``valid`` (a seeded 10 % of the training cells, for early stopping) and ``ood``
(counterfactual cells: each request's control cells labelled with the request; never trained on). The model keeps
the defaults of ``cpa.CPA`` except ``recon_loss="gauss"`` (CPA's setting for log-normalized data, which is what the
benchmark feeds every method); training uses ``CPA.train``'s defaults (batch 128, validation every 10 epochs,
early-stopping patience 10) within the epoch budget. The prediction of a request is the mean of CPA's
counterfactual predictions of its ``ood`` cells. Without SMILES, ``CPA.pert_smiles_map = {}``. In a dosed run (a
compound screen: the requests carry doses) the cells keep their doses and each request is predicted at its own.
"""

from __future__ import annotations

import os
from pathlib import Path

import anndata as ad
import numpy as np
from _adapter import COV, DOSE, KEY, write_prediction
from _runner import Timer, cost, parse_args, seed_everything


def main() -> None:
    args = parse_args(__doc__, default_epochs=100)
    seed_everything(args.seed)
    import cpa
    import scvi

    scvi.settings.seed = args.seed
    adata = ad.read_h5ad(args.input)
    os.chdir(Path(args.output).resolve().parent)  # CPA writes CPA_info.json and history.csv to the working directory
    args.output = Path(args.output).resolve().name
    dosed = DOSE in adata.uns.pop("requests").columns
    adata.obs[KEY] = adata.obs[KEY].astype(str)
    adata.obs[COV] = adata.obs[COV].astype(str)
    cpa.CPA.pert_smiles_map = {}
    cpa.CPA.setup_anndata(adata, perturbation_key=KEY, control_group="ctrl", dosage_key="dose",
                          categorical_covariate_keys=[COV], is_count_data=False, max_comb_len=2)  # fmt: skip
    model = cpa.CPA(adata, split_key="split", train_split="train", valid_split="valid", test_split="ood",
                    recon_loss="gauss")  # fmt: skip
    n_train = int((adata.obs["split"] != "ood").sum())
    with Timer() as t:
        model.train(max_epochs=args.epochs, use_gpu=False, enable_progress_bar=False)
    trainer = getattr(getattr(model, "runner", None), "trainer", None)  # epochs run, early stopping included
    epochs = int(trainer.current_epoch) if trainer is not None else args.epochs
    ood = adata[(adata.obs["split"] == "ood").to_numpy()].copy()
    labels, types, doses, rows = [], [], [], []
    if ood.n_obs:
        model.predict(ood, batch_size=1024)
        pred = np.asarray(ood.obsm["CPA_pred"], dtype=np.float64)
        by = [KEY, COV, DOSE] if dosed else [KEY, COV]
        for key, idx in ood.obs.groupby(by, observed=True).indices.items():
            labels.append(key[0])
            types.append(key[1])
            doses.append(key[2] if dosed else None)
            rows.append(pred[idx].mean(0))
    X = np.vstack(rows) if rows else np.zeros((0, adata.n_vars))
    write_prediction(args.output, labels, types, X, adata.var_names, cost(t.seconds, epochs, n_train),
                     doses=doses if dosed else None)  # fmt: skip


if __name__ == "__main__":
    main()
