"""Query mapping in the manner of scvi-tools' ``ArchesMixin``: align a query's genes, extend the categories, fine-tune.

The context and target encoders read expression only (batch and covariates condition the predictor), so a query's
latent lives in the reference latent as soon as its genes are aligned: :meth:`load_query_data` copies every weight,
adds embeddings for the query's new batch and covariate categories (started at the mean of the reference ones) and
freezes everything else; ``train`` then fine-tunes only those new rows, with the EMA target held fixed.
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path

import numpy as np
import torch
from anndata import AnnData
from mudata import MuData

from ..data import check_categorical
from ..data._genes import GenePriors
from ._save_load import read_model_folder

logger = logging.getLogger(__name__)

#: Fine-tuning a mapped query: the target encoder stays the reference's and frozen rows do not decay.
QUERY_PLAN_KWARGS = {"ema_momentum": (1.0, 1.0), "weight_decay": 0.0}


def _reference_parts(reference) -> tuple[dict, np.ndarray, dict]:
    """Attributes, gene names and weights of a model or of a saved model folder."""
    if isinstance(reference, str | Path):
        attrs, var_names, state, _ = read_model_folder(str(reference), map_location="cpu")
        return attrs, var_names, state
    attrs = {name: copy.deepcopy(value) for name, value in reference._get_user_attributes() if name.endswith("_")}
    state = {k: v.detach().cpu().clone() for k, v in reference.module.state_dict().items()}
    return attrs, reference.get_var_names(), state


def _priors(state: dict) -> GenePriors:
    """The reference's gene statistics and modules, so that nothing is re-estimated from the query."""
    index = next(v for k, v in state.items() if k.endswith("tokenizer.module_index"))
    loadings = next(v for k, v in state.items() if k.endswith("tokenizer.gene_embedding"))
    return GenePriors(state["gene_mean"].numpy(), state["gene_std"].numpy(), loadings.numpy(), index.numpy())


def _expand(new_state: dict, ref_state: dict) -> tuple[dict, list[str], list[str]]:
    """Reference weights in the query module's shapes: category tables keep their rows and gain new ones."""
    out, grown, fresh = {}, [], []
    for key, value in new_state.items():
        ref = ref_state.get(key)
        if ref is not None and ref.shape == value.shape:
            out[key] = ref
        elif ref is not None and ref.ndim == 2 and key.endswith(".weight") and ref.shape[1:] == value.shape[1:]:
            rows = value.clone()
            rows[: ref.shape[0]] = ref
            rows[ref.shape[0] :] = ref.mean(0)  # a new category starts at the mean of the reference ones
            out[key], _ = rows, grown.append(key)
        else:
            out[key], _ = value, fresh.append(key)
    return out, grown, fresh


def _freeze_all_but_new_rows(module: torch.nn.Module, grown: dict[str, int]) -> None:
    """Only the new rows of the grown category tables get gradients (the reference rows are held by a hook)."""
    for name, param in module.named_parameters():
        n_ref = grown.get(name)
        param.requires_grad_(n_ref is not None)
        if n_ref is not None:

            def hook(grad, n_ref=n_ref):
                grad = grad.clone()
                grad[:n_ref] = 0.0
                return grad

            param.register_hook(hook)


class QueryMixin:
    """``prepare_query_anndata`` and ``load_query_data`` (reference mapping)."""

    @staticmethod
    def prepare_query_anndata(adata: AnnData, reference_model) -> AnnData:
        """Return a copy of ``adata`` with the reference model's genes in its order; missing genes are masked.

        Genes of the query the model does not know are dropped. Genes the model knows but the query lacks are added
        as all-NaN columns: the model reads them as not measured (they add nothing to their module's token), not as
        zero expression. How many were missing is logged. ``adata`` itself is not changed.

        Parameters
        ----------
        adata
            Query cells × genes (same expression scale as the reference).
        reference_model
            A trained :class:`~biojepa.BioJEPA` or the folder it was saved to.

        Returns
        -------
        A new AnnData with ``var_names`` equal to the model's genes; ``obs`` and ``obsm`` are kept.

        Examples
        --------
        >>> import scvi, biojepa as bj
        >>> ref = scvi.data.synthetic_iid()
        >>> bj.BioJEPA.setup_anndata(ref)
        >>> model = bj.BioJEPA(ref, n_latent=4)
        >>> query = ref[:10, 5:].copy()  # lacks the first 5 genes
        >>> aligned = bj.BioJEPA.prepare_query_anndata(query, model)
        >>> aligned.shape, int(aligned.uns["biojepa_missing_genes"].size)
        ((10, 100), 5)
        """
        if isinstance(adata, MuData):
            raise ValueError("Query mapping takes an AnnData; pass the RNA modality (e.g. `mdata['rna']`).")
        _, var_names, _ = _reference_parts(reference_model)
        if isinstance(var_names, dict):
            raise ValueError("The reference model was trained on MuData; query mapping supports AnnData models.")
        genes = np.asarray(var_names).astype(str)
        if adata.var_names.has_duplicates:
            raise ValueError("adata.var_names has duplicates; call `adata.var_names_make_unique()` first.")
        present = np.isin(genes, adata.var_names.astype(str))
        if not present.any():
            raise ValueError(
                f"The query shares none of the model's {len(genes)} genes (model genes e.g. {genes[:5].tolist()}, "
                f"query genes e.g. {adata.var_names[:5].tolist()}); use the same gene identifiers."
            )
        layer = None
        if reference_model is not None and not isinstance(reference_model, str | Path):
            layer = reference_model.adata_manager.registry["setup_args"]["layer"]
        X = adata.layers[layer] if layer is not None else adata.X
        cols = adata.var_names.astype(str).get_indexer(genes)
        X = X.toarray() if hasattr(X, "toarray") else np.asarray(X)
        out = np.full((adata.n_obs, len(genes)), np.nan, dtype=np.float32)
        out[:, present] = X[:, cols[present]]
        aligned = AnnData(out, obs=adata.obs.copy(), obsm=dict(adata.obsm))
        aligned.var_names = genes
        if layer is not None:
            aligned.layers[layer] = aligned.X.copy()
        missing = genes[~present]
        aligned.uns["biojepa_missing_genes"] = missing
        logger.info(
            "Query: %d of the model's %d genes are missing (masked); %d query genes not in the model were dropped.",
            len(missing),
            len(genes),
            int((~adata.var_names.astype(str).isin(genes)).sum()),
        )
        return aligned

    @classmethod
    def load_query_data(cls, adata: AnnData, reference_model, accelerator: str = "auto", device: int | str = "auto"):
        """Map query cells onto a reference model: new batch and covariate categories, everything else frozen.

        As scvi-tools' ``ArchesMixin.load_query_data``: the query is set up with the reference's setup (its new
        categories appended with ``extend_categories=True``), every reference weight is copied, the category tables
        gain rows for the new categories (started at the mean of the reference rows) and only those rows are left
        trainable. The encoders read expression only, so the query's latent is in the reference latent at once;
        ``model.train(...)`` fine-tunes the new rows (with the target encoder held fixed and no weight decay).

        Parameters
        ----------
        adata
            Query cells with the model's genes in its order (see :meth:`prepare_query_anndata`) and the reference's
            obs columns. Registered in place like ``setup_anndata`` (scvi-tools' bookkeeping columns only).
        reference_model
            A trained :class:`~biojepa.BioJEPA` or the folder it was saved to.
        accelerator, device
            Where to put the model.

        Returns
        -------
        A :class:`~biojepa.BioJEPA` on the query, in the reference's latent space.

        Examples
        --------
        >>> import numpy as np, scvi, biojepa as bj
        >>> adata = scvi.data.synthetic_iid(n_batches=3)
        >>> ref, query = adata[adata.obs["batch"] != "batch_2"].copy(), adata[adata.obs["batch"] == "batch_2"].copy()
        >>> bj.BioJEPA.setup_anndata(ref, batch_key="batch")
        >>> model = bj.BioJEPA(ref, n_latent=4)
        >>> model.train(max_epochs=1, enable_progress_bar=False)
        >>> qmodel = bj.BioJEPA.load_query_data(query, model)
        >>> qmodel.train(max_epochs=1, enable_progress_bar=False)
        >>> qmodel.get_latent_representation().shape
        (200, 4)
        """
        from scvi.model._utils import parse_device_args

        if isinstance(adata, MuData):
            raise ValueError("Query mapping takes an AnnData; MuData models are not supported yet.")
        _, _, torch_device = parse_device_args(
            accelerator=accelerator, devices=device, return_device="torch", validate_single_device=True
        )
        attrs, var_names, ref_state = _reference_parts(reference_model)
        registry = attrs.pop("registry_")
        if registry.get("setup_method_name", "setup_anndata") != "setup_anndata":
            raise ValueError("The reference model was set up with MuData; query mapping supports AnnData models.")
        genes = np.asarray(var_names).astype(str)
        if not np.array_equal(np.asarray(adata.var_names).astype(str), genes):
            raise ValueError(
                f"The query's genes are not the model's {len(genes)} genes in the model's order; align them with "
                "`query = BioJEPA.prepare_query_anndata(query, reference_model)` first."
            )
        args = registry["setup_args"]
        check_categorical(
            adata,
            {"batch_key": args.get("batch_key"), "categorical_covariate_keys": args.get("categorical_covariate_keys")},
        )
        cls.setup_anndata(adata, source_registry=registry, extend_categories=True, **args)
        init = attrs.pop("init_params_")
        kwargs = {k: v for group in init.get("kwargs", {}).values() for k, v in group.items()}
        model = cls.__new__(cls)
        model._reference_priors = _priors(ref_state)
        model.__init__(adata, **init["non_kwargs"], **kwargs)
        del model._reference_priors
        new_state = model.module.state_dict()
        state, grown, fresh = _expand(new_state, ref_state)
        model.module.load_state_dict(state)
        if fresh:
            logger.warning("Query model: %s start fresh (no reference counterpart of that shape).", fresh)
        n_ref = {k: ref_state[k].shape[0] for k in grown}
        _freeze_all_but_new_rows(model.module, n_ref)
        for name in ("is_trained_", "history_"):
            if name in attrs:
                setattr(model, name, attrs[name])
        model.default_plan_kwargs_ = dict(QUERY_PLAN_KWARGS)
        added = {k: int(new_state[k].shape[0] - n_ref[k]) for k in grown}
        logger.info("Query model: new category rows %s are trainable; every other weight is frozen.", added or "none")
        model.to_device(torch_device)
        return model
