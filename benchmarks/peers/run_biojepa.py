"""BioJEPA runner (our environment): train on the canonical input with the model's defaults, predict the requests."""

from __future__ import annotations

import warnings

import anndata as ad
import numpy as np
from _adapter import COV, KEY, write_prediction
from _runner import Timer, cost, parse_args, seed_everything


def main() -> None:
    args = parse_args(__doc__, default_epochs=50)
    seed_everything(args.seed)
    import scvi

    import biojepa as bj

    warnings.filterwarnings("ignore")
    scvi.settings.seed = args.seed
    scvi.settings.num_threads = args.threads
    adata = ad.read_h5ad(args.input)
    requests = adata.uns["requests"]
    covs = [COV] if adata.obs[COV].nunique() > 1 else None
    extra = {"perturbation_type_key": "perturbation_type"} if "perturbation_type" in adata.obs else {}
    bj.BioJEPA.setup_anndata(adata, perturbation_key=KEY, control_value="control",
                             categorical_covariate_keys=covs, **extra)  # fmt: skip
    model = bj.BioJEPA(adata)
    with Timer() as t:
        model.train(max_epochs=args.epochs, enable_progress_bar=False)
    epochs = len(model.history["train_loss_epoch"]) if "train_loss_epoch" in model.history else args.epochs
    labels, types, rows = [], [], []
    for (label, cell_type), _ in requests.groupby([KEY, COV], sort=False):
        try:
            pred = model.predict_perturbation(label, covariates={COV: cell_type} if covs else None)
        except ValueError:  # a gene without a token: BioJEPA cannot predict it
            continue
        labels.append(label)
        types.append(cell_type)
        rows.append(np.asarray(pred.X)[0])
    X = np.vstack(rows) if rows else np.zeros((0, adata.n_vars))
    write_prediction(args.output, labels, types, X, adata.var_names, cost(t.seconds, epochs, adata.n_obs))


if __name__ == "__main__":
    main()
