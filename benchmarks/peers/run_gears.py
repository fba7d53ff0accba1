"""GEARS runner (environment of ``setup_gears.sh``): GEARS' documented defaults, our split, no network access.

Input: the adapter's GEARS AnnData (``condition`` ``A+ctrl`` / ``A+B`` / ``ctrl``, ``var["gene_name"]``,
``uns["gene2go"]``). GEARS' ``PertData`` downloads ``gene2go_all.pkl`` unless the file exists, so it is written
here from ``uns["gene2go"]`` (the GO annotations of ``../shared/data/gene_priors``) before ``PertData`` starts; the
GO graph is then built by GEARS itself (``default_pert_graph=False``: the measured and perturbed genes). The custom
split trains on every training perturbation; GEARS' validation set (used only to keep its best epoch) is a seeded
10 % of the training perturbations. Defaults of the GEARS tutorial: ``batch_size=32``, ``test_batch_size=128``,
``hidden_size=64``, ``lr=1e-3``, 20 epochs. GEARS samples control cells without looking at the cell type; to
predict in one cell line, its control cells are the ones perturbed in silico (``model.adata`` is restricted to
that line during ``predict``).
"""

from __future__ import annotations

import os
import pickle
import tempfile
from pathlib import Path

import anndata as ad
import numpy as np
from _adapter import COV, KEY, write_prediction
from _runner import Timer, cost, parse_args, seed_everything


def main() -> None:
    args = parse_args(__doc__, default_epochs=20)
    seed_everything(args.seed)
    from gears import GEARS, PertData

    adata = ad.read_h5ad(args.input)
    requests = adata.uns.pop("requests")
    gene2go_pairs = adata.uns.pop("gene2go")
    work = Path(tempfile.mkdtemp(prefix="gears_"))
    os.chdir(work)  # GEARS writes ./data/go_essential_<name>.csv relative to the working directory
    data_path = work / "data"
    data_path.mkdir()
    gene2go = {g: set(df["go_id"]) for g, df in gene2go_pairs.groupby("symbol")}
    with open(data_path / "gene2go_all.pkl", "wb") as f:
        pickle.dump(gene2go, f)
    with Timer() as prep:
        pert_data = PertData(str(data_path), default_pert_graph=False)
        pert_data.new_data_process(dataset_name="split", adata=adata)
        conds = sorted(set(adata.obs[KEY]) - {"ctrl"})
        rng = np.random.default_rng(args.seed)
        val = sorted(rng.choice(conds, max(1, len(conds) // 10), replace=False).tolist())
        with open(work / "split.pkl", "wb") as f:
            pickle.dump({"train": [*conds, "ctrl"], "val": val}, f)
        pert_data.prepare_split(split="custom", split_dict_path=str(work / "split.pkl"))
        pert_data.split = "no_test"  # our held-out perturbations never enter GEARS
        pert_data.get_dataloader(batch_size=32, test_batch_size=128)
        model = GEARS(pert_data, device="cpu")
        model.model_initialize(hidden_size=64)
    with Timer() as t:
        model.train(epochs=args.epochs, lr=1e-3)
    processed = model.adata
    labels, types, rows = [], [], []
    for cell_type, reqs in requests.groupby(COV):
        model.adata = processed[processed.obs[COV].astype(str) == cell_type]
        model.saved_pred = {}
        for label in reqs[KEY]:
            genes = [g for g in label.split("+") if g != "ctrl"]
            if any(g not in model.pert_list for g in genes):
                continue  # GEARS predicts only genes of its perturbation graph
            pred = model.predict([genes])
            labels.append(label)
            types.append(cell_type)
            rows.append(np.asarray(pred["_".join(genes)], dtype=np.float64))
    X = np.vstack(rows) if rows else np.zeros((0, adata.n_vars))
    spent = cost(t.seconds, args.epochs, adata.n_obs) | {"prep_seconds": prep.seconds}
    write_prediction(args.output, labels, types, X, adata.var_names, spent)


if __name__ == "__main__":
    main()
