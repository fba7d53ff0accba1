"""CellFlow runner (environment of ``setup_cellflow.sh``): conditional flow matching on a PCA of our split.

Input: the canonical AnnData (``condition`` ``control`` / ``A`` / ``A+B``, ``cell_type``, ``uns["requests"]``).
CellFlow learns, per condition, a flow that transports the control cells of a cell type onto that condition's cells
in a cell representation. The representation is CellFlow's own ``centered_pca`` (50 components of the training
cells' log-normalized expression); predicted cells are mapped back with ``reconstruct_pca`` (loadings plus mean).

Conditions: each perturbed gene has a one-hot vector over the genes perturbed in training
(``uns["gene_embeddings"]``); a label is written as two perturbation covariate columns ``gene_1``, ``gene_2``
(``max_combination_length=2``), a single gene padding ``gene_2`` with ``"ctrl"``, whose vector is all zeros (the
null value that CellFlow masks out when it pools a combination). An unseen combination of seen genes is thus
answerable; a request with a gene never perturbed in training has no trained vector and is skipped (as for CPA).
With more than one cell type, the cell type is a sample covariate (one-hot, ``uns["cell_type_embeddings"]``) and
a split covariate (each cell type's control cells are the source of its own perturbed cells); CellFlow then repeats
the cell-type vector on every gene slot, so the ``"ctrl"`` slot of a single is no longer masked but pooled as a
"no second gene" token.

Model: ``CellFlow(adata, solver="otfm")`` with the defaults of ``CellFlow.prepare_model`` (deterministic condition
encoder with attention-token pooling and a 256-wide condition embedding, sinusoidal time encoding with 1,024
frequencies, concatenation conditioning, SiLU, constant-noise path with noise 0, linear OT matching of source and
target batches) except where one CPU thread and ~5,000 training cells force smaller settings: the time encoder is
3 x 256 (default 3 x 2048), the cell encoder 3 x 512 (default 3 x 2048), the decoder 3 x 512 (default 3 x 4096), and
the optimizer ``optax.adam(1e-4)`` updated every step (the default accumulates 20 steps at 5e-5, i.e. one update
per 20 steps: far too few updates within a CPU budget). Each training step draws one (control population,
condition) pair and ``BATCH`` = 256 cells of each, with replacement (CellFlow's default of 1,024 would mostly repeat
the ~100-200 cells of a condition). Validation during training is off (CellFlow has no early stopping).

Budget: CellFlow counts iterations, not epochs; one "epoch" here is ``ceil(n_train_cells / BATCH)`` iterations
(as many cells drawn as there are training cells), so the default 100 epochs on ~4,000-5,000 training cells are
~1,600-1,900 iterations (a few minutes on one thread). The prediction of a request is the mean of the predicted
cells pushed from all training control cells of its cell type, reconstructed to genes.
"""

from __future__ import annotations

import math
import os

import anndata as ad
import numpy as np
import pandas as pd
from _adapter import CONTROL, COV, KEY, genes_of, write_prediction
from _runner import Timer, cost, parse_args, seed_everything

N_PCS = 50
BATCH = 256
PAD = "ctrl"
GENE_COLS = ("gene_1", "gene_2")
IS_CONTROL = "is_control"
MODEL = {"time_encoder_dims": (256, 256, 256), "hidden_dims": (512, 512, 512), "decoder_dims": (512, 512, 512)}


def gene_columns(labels) -> pd.DataFrame:
    """``gene_1``, ``gene_2`` of each label (``"ctrl"`` where absent; control is ``"ctrl"`` twice)."""
    rows = []
    for label in labels:
        genes = genes_of(label)
        if len(genes) > len(GENE_COLS):
            raise ValueError(f"{label}: CellFlow runner encodes at most {len(GENE_COLS)} genes per condition")
        rows.append(genes + [PAD] * (len(GENE_COLS) - len(genes)))
    return pd.DataFrame(rows, columns=list(GENE_COLS))


def one_hot(values: list[str]) -> dict[str, np.ndarray]:
    eye = np.eye(len(values), dtype=np.float32)
    return {v: eye[i] for i, v in enumerate(values)}


def main() -> None:
    args = parse_args(__doc__, default_epochs=100)
    os.environ["JAX_PLATFORMS"] = "cpu"
    os.environ["TQDM_DISABLE"] = "1"
    if args.threads == 1:
        os.environ["XLA_FLAGS"] = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
    seed_everything(args.seed)
    import optax
    from cellflow.model import CellFlow
    from cellflow.preprocessing import centered_pca, reconstruct_pca

    adata = ad.read_h5ad(args.input)
    requests = adata.uns.pop("requests")
    labels = adata.obs[KEY].astype(str).to_numpy()
    adata.obs[KEY] = labels
    adata.obs[COV] = adata.obs[COV].astype(str)
    adata.obs[IS_CONTROL] = labels == CONTROL
    for col, values in gene_columns(labels).items():
        adata.obs[col] = values.to_numpy()
    trained = sorted({g for c in labels for g in genes_of(c)})
    adata.uns["gene_embeddings"] = {**one_hot(trained), PAD: np.zeros(len(trained), dtype=np.float32)}
    cell_types = sorted(set(adata.obs[COV]))
    covariates = {}
    if len(cell_types) > 1:
        adata.uns["cell_type_embeddings"] = one_hot(cell_types)
        covariates = {"sample_covariates": [COV], "sample_covariate_reps": {COV: "cell_type_embeddings"},
                      "split_covariates": [COV]}  # fmt: skip

    centered_pca(adata, n_comps=N_PCS, keep_centered_data=False, random_state=args.seed)
    model = CellFlow(adata, solver="otfm")
    model.prepare_data(sample_rep="X_pca", control_key=IS_CONTROL, perturbation_covariates={"gene": GENE_COLS},
                       perturbation_covariate_reps={"gene": "gene_embeddings"}, max_combination_length=2,
                       **covariates)  # fmt: skip
    model.prepare_model(**MODEL, optimizer=optax.adam(1e-4), seed=args.seed)
    n_train = adata.n_obs
    iterations = args.epochs * math.ceil(n_train / BATCH)
    with Timer() as t:
        model.train(num_iterations=iterations, batch_size=BATCH, valid_freq=iterations + 2)

    wanted = [(str(c), str(ct)) for c, ct in requests[[KEY, COV]].itertuples(index=False, name=None)]
    wanted = [(c, ct) for c, ct in wanted if set(genes_of(c)) <= set(trained) and c != CONTROL]
    wanted = [(c, ct) for c, ct in wanted if (adata.obs[IS_CONTROL] & (adata.obs[COV] == ct)).any()]
    out_labels, out_types, rows = [], [], []
    if wanted:
        covariate_data = gene_columns([c for c, _ in wanted])
        covariate_data[COV] = [ct for _, ct in wanted]
        covariate_data[IS_CONTROL] = False
        covariate_data["request"] = [f"{c}|{ct}" for c, ct in wanted]
        controls = adata[adata.obs[IS_CONTROL].to_numpy() & adata.obs[COV].isin({ct for _, ct in wanted}).to_numpy()]
        controls = controls.copy()
        pred = model.predict(controls, covariate_data=covariate_data, condition_id_key="request")
        for (label, cell_type), key in zip(wanted, covariate_data["request"], strict=True):
            cells_pca = np.asarray(pred[key], dtype=np.float64)
            obs = pd.DataFrame(index=[str(i) for i in range(len(cells_pca))])
            cells = ad.AnnData(obs=obs, var=pd.DataFrame(index=adata.var_names), obsm={"X_pca": cells_pca})
            reconstruct_pca(cells, use_rep="X_pca", ref_means=adata.varm["X_mean"], ref_pcs=adata.varm["PCs"])
            out_labels.append(label)
            out_types.append(cell_type)
            rows.append(np.asarray(cells.layers["X_recon"]).mean(0))
    X = np.vstack(rows) if rows else np.zeros((0, adata.n_vars))
    epochs = iterations * BATCH / n_train
    write_prediction(args.output, out_labels, out_types, X, adata.var_names, cost(t.seconds, epochs, n_train))


if __name__ == "__main__":
    main()
