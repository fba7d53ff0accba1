"""Input checks and gene priors of :class:`~biojepa.BioJEPA` (AnnData and MuData)."""

from __future__ import annotations

import logging

import numpy as np
from anndata import AnnData
from mudata import MuData
from scvi import REGISTRY_KEYS, settings

from .._constants import INPUT_SCALES
from ..data import check_categorical, check_expression, gene_priors, get_matrix, resolve_input_scale, sample_rows
from ._checks import check_data_size

_MAX_CELLS_FOR_GENE_STATS = 10_000


class InputsMixin:
    """Validation of query data and the gene priors the module is built from."""

    def _validate_internal(self, data):
        """Register an internal copy built from the user's data (scvi's "transferring setup" note is muted)."""
        scvi_logger = logging.getLogger("scvi")
        level = scvi_logger.level
        scvi_logger.setLevel(logging.WARNING)
        try:
            return self._validate_anndata(data)
        finally:
            scvi_logger.setLevel(level)

    def _gene_priors(self, n_embed: int, n_modules: int | None, gene_modules):
        """Input scale, gene statistics, loadings and modules of the registered AnnData."""
        layer = self.adata_manager.registry["setup_args"]["layer"]
        reference = getattr(self, "_reference_priors", None)  # set by `load_query_data`: nothing re-estimated
        self.input_scale = resolve_input_scale(
            self.adata,
            layer,
            self.adata_manager.registry["setup_args"]["input_scale"],
            allow_missing_genes=reference is not None,
        )
        n_genes = self.summary_stats.n_vars
        if reference is not None:
            return reference, n_genes
        check_data_size(self.adata.n_obs, n_genes)
        if n_modules is None:
            n_modules = min(16, max(2, n_genes // 8))
        rows = sample_rows(self.adata.n_obs, _MAX_CELLS_FOR_GENE_STATS, settings.seed or 0)
        size_factor = None
        if REGISTRY_KEYS.SIZE_FACTOR_KEY in self.adata_manager.data_registry:
            size_factor = self.get_from_registry(self.adata, REGISTRY_KEYS.SIZE_FACTOR_KEY)[rows]
        priors = gene_priors(
            get_matrix(self.adata, layer)[rows],
            self.input_scale,
            n_embed=n_embed,
            n_modules=n_modules,
            gene_modules=gene_modules,
            size_factor=size_factor,
            seed=settings.seed or 0,
        )
        return priors, n_genes

    def _check_genes(self, adata: AnnData) -> None:
        """Raise if ``adata`` lacks, or orders differently, the genes the model was trained on."""
        expected = self.adata_manager.get_state_registry(REGISTRY_KEYS.X_KEY).column_names
        if adata.n_vars == len(expected) and np.array_equal(np.asarray(adata.var_names), np.asarray(expected)):
            return
        missing = [g for g in expected if g not in set(adata.var_names)]
        if missing:
            raise ValueError(
                f"The AnnData lacks {len(missing)} of the model's {len(expected)} genes (e.g. {missing[:5]}); "
                "map it with `BioJEPA.prepare_query_anndata(adata, model)`, which reorders the genes and masks the "
                "missing ones (they are not treated as measured zeros)."
            )
        raise ValueError(
            f"The AnnData's genes differ in order or number from the model's ({adata.n_vars} vs {len(expected)}); "
            "subset and reorder them with `adata = adata[:, model.adata.var_names].copy()`."
        )

    def _validate_anndata(self, adata: AnnData | None = None, copy_if_view: bool = True) -> AnnData:
        if isinstance(adata, MuData) and adata is not self.adata:
            self._validate_mudata(adata)
        elif adata is not None and adata is not self.adata:
            self._check_genes(adata)
            self._check_expression(adata)
            if self.get_anndata_manager(adata) is None:
                self._check_categories(adata)
        return super()._validate_anndata(adata, copy_if_view=copy_if_view)

    def _check_expression(self, adata: AnnData) -> None:
        """Validate ``adata``'s expression as at setup, on the scale the model was trained on."""
        args = self.adata_manager.registry["setup_args"]
        scale = check_expression(
            adata, args["layer"], allow_negative=args["input_scale"] == INPUT_SCALES.LOG, allow_missing_genes=True
        )
        trained = getattr(self, "input_scale", None)
        if trained is not None and scale != trained and args["input_scale"] == INPUT_SCALES.AUTO:
            where = "adata.X" if args["layer"] is None else f"adata.layers[{args['layer']!r}]"
            kinds = {INPUT_SCALES.COUNTS: "raw counts", INPUT_SCALES.LOG: "log-normalized expression"}
            raise ValueError(
                f"The model was trained on {kinds[trained]} but {where} holds {kinds[scale]}; pass the query on the "
                f"training scale (e.g. the raw counts layer)."
            )

    def _check_categories(self, adata: AnnData) -> None:
        """Raise for a batch or categorical covariate value of ``adata`` that the model has no embedding for."""
        registry = self.adata_manager.data_registry
        mappings = {}
        if REGISTRY_KEYS.BATCH_KEY in registry:
            state = self.adata_manager.get_state_registry(REGISTRY_KEYS.BATCH_KEY)
            if state.original_key != "_scvi_batch":
                mappings[("batch_key", state.original_key)] = state.categorical_mapping
        if REGISTRY_KEYS.CAT_COVS_KEY in registry:
            state = self.adata_manager.get_state_registry(REGISTRY_KEYS.CAT_COVS_KEY)
            for key, mapping in state.mappings.items():
                mappings[("categorical_covariate_keys", key)] = mapping
        for (arg, key), mapping in mappings.items():
            if key not in adata.obs:
                raise KeyError(f"`{arg}`: adata.obs lacks the column {key!r} the model was set up with.")
            check_categorical(adata, {arg: key})
            unseen = sorted(set(adata.obs[key].astype(str)) - set(map(str, mapping)))
            if unseen:
                raise ValueError(
                    f"`{arg}`: adata.obs[{key!r}] has values the model was not trained on: {unseen[:5]}. Map the "
                    "new data with `model = BioJEPA.load_query_data(adata, model)` (it learns embeddings for them), "
                    "or relabel them to training values."
                )
