"""scGen runner (environment of ``setup_scgen.sh``): scGen's documented defaults on our split.

scGen predicts a perturbation in a cell type by latent vector arithmetic: the mean latent shift from control to
the perturbation in the *other* cell types is added to the latent codes of the target cell type's control cells and
decoded. So it can answer a request only when the perturbation was observed in another cell type (the McFaline
cross-line split); other requests are skipped (no prediction, reported as not applicable). One model is trained per
run, with ``batch_key="condition"`` (every perturbation a condition) and ``labels_key="cell_type"``; defaults of the
scGen README: ``SCGEN(adata)`` (800 hidden units, 100 latent dimensions), ``train(max_epochs=100, batch_size=32,
early_stopping=True, early_stopping_patience=25)``.
"""

from __future__ import annotations

import sys
import types
import typing

import anndata as ad
import numpy as np
from _adapter import COV, KEY, write_prediction
from _runner import Timer, cost, parse_args, seed_everything


def _scvi_compat() -> None:
    """Let scgen 2.1.0 import under scvi-tools 0.20.3 (older scvi-tools need a pytorch-lightning that does not resolve
    with the CPU torch pin).

    scgen 2.1.0 does ``from scvi._compat import Literal``, a module scvi-tools 0.20.3 keeps only to raise a
    DeprecationWarning on import: it is replaced, before scgen is imported, by one re-exporting ``typing.Literal``.
    scgen also builds ``LossRecorder(loss, reconstruction_loss, kl_local)``, which scvi-tools 0.20 replaced by the
    keyword-only ``LossOutput`` with fields of the same names: the old name becomes a function passing them on.
    """
    shim = types.ModuleType("scvi._compat")
    shim.Literal = typing.Literal
    sys.modules["scvi._compat"] = shim
    import scvi.module.base as base

    def loss_recorder(loss, reconstruction_loss, kl_local=None, kl_global=None):
        return base.LossOutput(loss=loss, reconstruction_loss=reconstruction_loss, kl_local=kl_local,
                               kl_global=kl_global)  # fmt: skip

    base.LossRecorder = loss_recorder


def main() -> None:
    args = parse_args(__doc__, default_epochs=100)
    seed_everything(args.seed)
    _scvi_compat()
    import scgen
    import scvi

    scvi.settings.seed = args.seed
    adata = ad.read_h5ad(args.input)
    requests = adata.uns.pop("requests")
    seen = adata.obs.groupby(KEY, observed=True)[COV].agg(lambda s: set(s.astype(str)))
    todo = [(c, t) for c, t in requests[[KEY, COV]].itertuples(index=False, name=None) if seen.get(c, set()) - {t}]
    labels, types, rows, spent = [], [], [], {}
    if todo:
        scgen.SCGEN.setup_anndata(adata, batch_key=KEY, labels_key=COV)
        model = scgen.SCGEN(adata)
        with Timer() as t:
            model.train(max_epochs=args.epochs, batch_size=32, early_stopping=True, early_stopping_patience=25,
                        enable_progress_bar=False)  # fmt: skip
        epochs = len(model.history["elbo_train"]) if "elbo_train" in model.history else args.epochs
        spent = cost(t.seconds, epochs, adata.n_obs)
        for label, cell_type in todo:
            pred, _ = model.predict(ctrl_key="ctrl", stim_key=label, celltype_to_predict=cell_type)
            X = pred.X.toarray() if hasattr(pred.X, "toarray") else np.asarray(pred.X)
            labels.append(label)
            types.append(cell_type)
            rows.append(X.mean(0))
    X = np.vstack(rows) if rows else np.zeros((0, adata.n_vars))
    write_prediction(args.output, labels, types, X, adata.var_names, spent)


if __name__ == "__main__":
    main()
