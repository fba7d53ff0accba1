"""BioJEPA: the user-facing scvi-tools model class."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Literal

import numpy as np
import pandas as pd
import torch
from anndata import AnnData
from scvi import REGISTRY_KEYS
from scvi.data import AnnDataManager
from scvi.data.fields import (
    CategoricalJointObsField,
    CategoricalObsField,
    LayerField,
    NumericalJointObsField,
    NumericalObsField,
)
from scvi.model.base import BaseModelClass, UnsupervisedTrainingMixin
from scvi.utils import track

from .._constants import EXTRA_KEYS, INPUT_SCALES, MODULE_KEYS
from ..data import (
    check_categorical,
    check_continuous,
    check_obs_keys,
    check_time,
    check_unique_names,
    resolve_input_scale,
)
from ..module import BioJEPAModule
from ..perturbation import check_perturbation_setup
from ..train import BioJEPATrainingPlan
from ._checks import check_model_args
from ._expression import ExpressionMixin
from ._generative import GenerativeMixin
from ._inputs import InputsMixin
from ._multiomics import MultiomicsMixin
from ._perturbation import PerturbationMixin
from ._query import QueryMixin
from ._readout import resolve_readout
from ._save_load import SaveLoadMixin
from ._screen import ScreenMixin
from ._training import TrainingMixin
from ._trajectory import TrajectoryMixin
from ._trajectory_backtest import TrajectoryBacktestMixin

logger = logging.getLogger(__name__)


class BioJEPA(
    GenerativeMixin,
    ExpressionMixin,
    InputsMixin,
    MultiomicsMixin,
    TrajectoryMixin,
    TrajectoryBacktestMixin,
    PerturbationMixin,
    ScreenMixin,
    QueryMixin,
    SaveLoadMixin,
    TrainingMixin,
    UnsupervisedTrainingMixin,
    BaseModelClass,
):
    """Joint Embedding Predictive Architecture for single-cell expression :cite:p:`assran2023ijepa`.

    Genes are grouped into co-expression modules, each module becomes a token (the expression-weighted
    sum of gene-identity embeddings, initialized from the genes' co-expression loadings), and the model
    learns a cell latent by predicting, in embedding space, the target-encoder (EMA) representations of hidden
    modules from the visible ones. VICReg variance/covariance terms keep the latent from collapsing
    :cite:p:`bardes2022vicreg`. A readout of expression from the cell latent trains alongside by default
    (``readout_weight``, ``readout_likelihood``): a negative-binomial likelihood of RNA counts, or on log-scale RNA
    and multi-modal input a squared error of each feature's normalized value in which features weigh by their
    variance.

    Parameters
    ----------
    adata
        AnnData registered with :meth:`setup_anndata`.
    n_latent
        Width of the cell latent.
    n_modules
        Number of gene modules (tokens). Default: ``min(16, max(2, n_genes // 8))``.
    gene_modules
        Optional module label per gene (e.g. pathway or program ids), overriding the co-expression modules.
    n_embed
        Token width.
    n_layers, n_heads
        Depth and heads of the context/target transformer.
    mlp_ratio, dropout
        Transformer MLP width ratio and dropout.
    predictor_dim, predictor_depth
        Width and depth of the predictor.
    pooling
        Where the cell latent is read: ``"mean"`` of the module tokens, a ``"cls"`` token, or ``"both"``.
    mask_ratio
        ``(low, high)`` fraction of modules hidden from the context encoder at each step.
    mask_blocks
        ``None``: the hidden modules are scattered at random. An integer ``k``: they form ``k`` runs of
        consecutive modules, i.e. groups of co-expressed modules (multi-block masking).
    gene_dropout
        Fraction of genes of the visible modules set to their mean in the context encoder's input at each step.
    readout_weight
        Weight of the expression readout from the cell latent, an auxiliary term next to the JEPA loss that shapes
        the latent. ``None`` (default): 3,000 with the negative-binomial readout (RNA counts) and with
        ``"mse_log"`` (log-scale RNA, several modalities), else ``0``. ``0`` trains the pure JEPA objective.
    readout_likelihood
        What the readout fits: ``"nb"`` the raw counts under a negative-binomial likelihood, as scVI's decoder does
        (counts input only); ``"mse"`` standardized log expression; ``"mse_log"`` log expression on its own scale
        (each gene's squared error weighted by its variance, so genes weigh as in PCA, not equally: on the K562
        conditions of PerturBench this took the latent's kNN accuracy from 0.07 to PCA's 0.18). ``None``
        (default): ``"nb"`` for RNA-only counts, else ``"mse_log"``.
    readout_genes
        With the negative-binomial readout: how many genes, drawn at random at each step, it scores (the counts
        of a subset given their total follow the same model renormalized over the subset, so every gene is fitted
        over the steps at a fraction of the cost). Default 512, the best of 256/512/all on Kang 2018 (3 seeds,
        benchmarks page, "What the latent learns"); ``None``: every gene.
    jepa_weight, variance_weight, covariance_weight
        Loss weights of the JEPA regression and the VICReg variance/covariance terms.
    perturbation_features
        Numeric features of perturbations, a DataFrame indexed by perturbation name (gene symbols, compound names):
        GO-derived gene features (:func:`biojepa.data.go_features`), compound fingerprints
        (:func:`biojepa.data.compound_features`) or any table. Each token gets a learned projection of its row, and
        a name absent from training but present in the table (an unseen compound) is predicted from its features.
        ``None``: tokens from identity alone.
    identity_dropout
        With ``perturbation_features``: probability, in training, of dropping a featured perturbation's identity
        term from its token, so that features learn to stand in for it.
    perturbation_dim
        Width of the perturbation tokens (used when a ``perturbation_key`` is registered).
    perturbation_weight, expression_weight
        Weights of the perturbation JEPA loss (predicted vs target latent of perturbed cells) and of the
        expression head, which reads a stop-gradient latent and so does not shape it.
    interaction_penalty
        Weight of the squared interaction term of combinations (shrinks it towards the additive composition).
    dynamic_weight
        Weight of the time-course JEPA loss (used when a ``time_key`` is registered): the predictor regresses the
        target latents of queried time points of a sequence from its observed ones.
    smoothness_weight
        Weight of the optional temporal-consistency regulariser (squared change of latent velocity along a
        sequence); off by default (see the benchmarks page).
    cross_modal_prob, cross_modal_weight, modality_weight
        With data registered by :meth:`setup_mudata`: probability that a training step hides a whole modality from
        the context encoder (cross-modal JEPA), weight of the regression of that partial latent on the full cell's
        target latent, and weight of the heads that read each non-RNA modality from the stop-gradient latent.

    Examples
    --------
    >>> import scvi, biojepa as bj
    >>> adata = scvi.data.synthetic_iid()
    >>> bj.BioJEPA.setup_anndata(adata, batch_key="batch")
    >>> model = bj.BioJEPA(adata, n_latent=8)
    >>> model.train(max_epochs=1, enable_progress_bar=False)
    >>> z = model.get_latent_representation(key_added="X_biojepa")
    >>> z.shape
    (400, 8)
    """

    _module_cls = BioJEPAModule
    _training_plan_cls = BioJEPATrainingPlan

    def __init__(
        self,
        adata: AnnData,
        n_latent: int = 32,
        n_modules: int | None = None,
        gene_modules: Sequence | None = None,
        n_embed: int = 32,
        n_layers: int = 2,
        n_heads: int = 2,
        mlp_ratio: float = 2.0,
        dropout: float = 0.0,
        predictor_dim: int = 32,
        predictor_depth: int = 2,
        pooling: str = "mean",
        mask_ratio: tuple[float, float] = (0.25, 0.5),
        mask_blocks: int | None = None,
        gene_dropout: float = 0.0,
        readout_weight: float | None = None,
        readout_likelihood: str | None = None,
        readout_genes: int | None = 512,
        jepa_weight: float = 25.0,
        variance_weight: float = 25.0,
        covariance_weight: float = 1.0,
        perturbation_features: pd.DataFrame | None = None,
        identity_dropout: float = 0.5,
        perturbation_dim: int = 64,
        perturbation_weight: float = 1.0,
        expression_weight: float = 1.0,
        interaction_penalty: float = 1.0,
        dynamic_weight: float = 25.0,
        smoothness_weight: float = 0.0,
        cross_modal_prob: float = 0.5,
        cross_modal_weight: float = 25.0,
        modality_weight: float = 1.0,
    ):
        check_model_args(locals())
        super().__init__(adata)
        modality_kwargs = {}
        if self._multimodal:
            priors, specs = self._modality_priors(n_embed, n_modules)
            self.input_scale = specs[0].input_scale
            n_genes = sum(m.n_features for m in specs)
            modality_kwargs = {
                "modalities": [tuple(m) for m in specs],
                "cross_modal_prob": cross_modal_prob,
                "cross_modal_weight": cross_modal_weight,
                "modality_weight": modality_weight,
            }
        else:
            priors, n_genes = self._gene_priors(n_embed, n_modules, gene_modules)
        module_index = priors.module_index

        cat_state = (
            self.adata_manager.get_state_registry(REGISTRY_KEYS.CAT_COVS_KEY)
            if REGISTRY_KEYS.CAT_COVS_KEY in self.adata_manager.data_registry
            else None
        )
        perturbation = self._perturbation_module_kwargs(perturbation_features, identity_dropout)
        readout = resolve_readout(readout_weight, readout_likelihood, self.input_scale, self._multimodal)
        self.module = self._module_cls(
            n_input=n_genes,
            module_index=torch.from_numpy(priors.module_index),
            gene_mean=torch.from_numpy(priors.gene_mean),
            gene_std=torch.from_numpy(priors.gene_std),
            gene_embedding_init=torch.from_numpy(priors.loadings),
            input_scale=self.input_scale,
            n_batch=self.summary_stats.n_batch,
            n_cats_per_cov=list(cat_state.n_cats_per_key) if cat_state is not None else None,
            n_continuous_cov=self.summary_stats.get("n_extra_continuous_covs", 0),
            n_latent=n_latent,
            n_embed=n_embed,
            n_layers=n_layers,
            n_heads=n_heads,
            mlp_ratio=mlp_ratio,
            dropout=dropout,
            predictor_dim=predictor_dim,
            predictor_depth=predictor_depth,
            pooling=pooling,
            mask_ratio=mask_ratio,
            mask_blocks=mask_blocks,
            gene_dropout=gene_dropout,
            readout_weight=readout[0],
            readout_likelihood=readout[1],
            readout_genes=readout_genes,
            jepa_weight=jepa_weight,
            variance_weight=variance_weight,
            covariance_weight=covariance_weight,
            perturbation_dim=perturbation_dim,
            perturbation_weight=perturbation_weight,
            expression_weight=expression_weight,
            interaction_penalty=interaction_penalty,
            dynamic_weight=dynamic_weight,
            smoothness_weight=smoothness_weight,
            **perturbation,
            **self._time_module_kwargs(),
            **modality_kwargs,
        )
        self._model_summary_string = (
            f"BioJEPA: {n_genes} genes in {module_index.shape[0]} modules, n_latent={n_latent}, "
            f"n_embed={n_embed}, n_layers={n_layers}, input_scale={self.input_scale!r}"
        )
        if perturbation:
            self._model_summary_string += f", {len(self.perturbation_setup_.vocabulary)} perturbation tokens"
        self.init_params_ = self._get_init_params(locals())

    @classmethod
    def setup_anndata(
        cls,
        adata: AnnData,
        layer: str | None = None,
        *,
        input_scale: Literal["auto", "counts", "log"] = "auto",
        perturbation_key: str | None = None,
        control_value: str | None = None,
        combination_delimiter: str = "+",
        dose_key: str | None = None,
        perturbation_type_key: str | None = None,
        time_key: str | None = None,
        sample_key: str | None = None,
        batch_key: str | None = None,
        categorical_covariate_keys: list[str] | None = None,
        continuous_covariate_keys: list[str] | None = None,
        size_factor_key: str | None = None,
        **kwargs,
    ) -> None:
        """Register an AnnData with BioJEPA.

        Input may be raw counts (normalized to log1p CP10k inside the model) or log-normalized
        expression; the scale is detected (integers → counts) and logged, or forced with ``input_scale``.
        Registration adds scvi-tools' bookkeeping slots (``adata.obs["_scvi_batch"]``,
        ``adata.obs["_scvi_labels"]``, ``adata.obsm["_scvi_extra_*"]``, with perturbations
        ``adata.obs["_scvi_perturbation"]``, ``adata.obs["_scvi_dose"]`` and ``adata.obs["_scvi_perturbation_type"]``,
        ``adata.uns["_scvi_uuid"]``,
        ``adata.uns["_scvi_manager_uuid"]``) and changes nothing else.

        Parameters
        ----------
        adata
            Cells × genes.
        layer
            Layer with the expression; ``None`` uses ``adata.X``.
        input_scale
            ``"auto"`` (detect), ``"counts"`` or ``"log"``.
        perturbation_key
            Column of ``adata.obs`` naming each cell's perturbed genes: the control value, a gene (``"SGK1"``) or
            genes joined by ``combination_delimiter`` (``"KLF1+MAP2K6"``); GEARS-style ``"A+ctrl"`` and ``"ctrl"``
            parse too. Enables :meth:`predict_perturbation`. Perturbed genes that are not measured get a learned
            token; measured genes always have one (built from their identity embedding), perturbed or not.
        control_value
            Label of unperturbed cells in ``adata.obs[perturbation_key]`` (required with it).
        combination_delimiter
            String joining the genes of a combination.
        dose_key
            Column of ``adata.obs`` with the dose: a number, or one number per gene joined by the delimiter
            (``"1+1"``).
        perturbation_type_key
            Column of ``adata.obs`` with the perturbation type (e.g. CRISPRa / CRISPRi / KO).
        time_key
            Numeric column of ``adata.obs`` with each observation's time (hours, days, stage...). Enables time
            courses and :meth:`predict_trajectory`.
        sample_key
            Column of ``adata.obs`` naming the observations that form one sequence (a subject, lineage or well),
            ordered by ``time_key``. Without it, cells of consecutive time points are coupled at the population
            level by mini-batch optimal transport within each covariate group. A sample observed once is a
            static snapshot (a sequence of length 1).
        batch_key
            Column of ``adata.obs`` with the batch; the predictor is conditioned on it, so the latent
            need not encode it.
        categorical_covariate_keys, continuous_covariate_keys
            Further ``adata.obs`` columns the predictor is conditioned on.
        size_factor_key
            Column of ``adata.obs`` with library sizes used to normalize counts (default: total counts).
        **kwargs
            Passed to :meth:`scvi.data.AnnDataManager.register_fields`.

        Examples
        --------
        >>> import scvi, biojepa as bj
        >>> adata = scvi.data.synthetic_iid()
        >>> bj.BioJEPA.setup_anndata(adata, batch_key="batch")
        """
        setup_method_args = cls._get_setup_method_args(**locals())
        check_obs_keys(
            adata,
            {
                "batch_key": batch_key,
                "categorical_covariate_keys": categorical_covariate_keys,
                "continuous_covariate_keys": continuous_covariate_keys,
                "size_factor_key": size_factor_key,
                "perturbation_key": perturbation_key,
                "dose_key": dose_key,
                "perturbation_type_key": perturbation_type_key,
                "time_key": time_key,
                "sample_key": sample_key,
            },
        )
        check_unique_names(adata)
        check_categorical(
            adata,
            {
                "batch_key": batch_key,
                "categorical_covariate_keys": categorical_covariate_keys,
                "perturbation_type_key": perturbation_type_key,
                "sample_key": sample_key,
            },
        )
        if sample_key is not None and time_key is None:
            raise ValueError("`sample_key` orders a sample's observations by time: pass `time_key` with it.")
        if time_key is not None:
            check_time(adata, time_key)
        if perturbation_key is None:
            given = {
                "control_value": control_value,
                "dose_key": dose_key,
                "perturbation_type_key": perturbation_type_key,
            }
            given = [k for k, v in given.items() if v is not None]
            if given:
                raise ValueError(f"{given} need `perturbation_key` (the adata.obs column with perturbation labels).")
        else:
            check_perturbation_setup(
                adata, perturbation_key, control_value, combination_delimiter, dose_key, perturbation_type_key
            )
        check_continuous(adata, list(continuous_covariate_keys or []) + ([size_factor_key] if size_factor_key else []))
        is_query = kwargs.get("source_registry") is not None  # a transferred setup: genes may be missing (NaN)
        scale = resolve_input_scale(adata, layer, input_scale, allow_missing_genes=is_query)
        where = "adata.X" if layer is None else f"adata.layers[{layer!r}]"
        how = "detected" if input_scale == INPUT_SCALES.AUTO else "set by `input_scale`"
        kind = "raw counts" if scale == INPUT_SCALES.COUNTS else "log-normalized expression"
        logger.info("BioJEPA: %s holds %s (%s).", where, kind, how)
        if size_factor_key is not None and scale == INPUT_SCALES.LOG:
            logger.warning("`size_factor_key` is ignored for log-normalized input.")
        anndata_fields = [
            LayerField(REGISTRY_KEYS.X_KEY, layer, is_count_data=False),
            CategoricalObsField(REGISTRY_KEYS.BATCH_KEY, batch_key),
            CategoricalJointObsField(REGISTRY_KEYS.CAT_COVS_KEY, categorical_covariate_keys),
            NumericalJointObsField(REGISTRY_KEYS.CONT_COVS_KEY, continuous_covariate_keys),
            NumericalObsField(REGISTRY_KEYS.SIZE_FACTOR_KEY, size_factor_key, required=False),
        ]
        if perturbation_key is not None:
            anndata_fields.append(CategoricalObsField(EXTRA_KEYS.PERTURBATION, perturbation_key))
            if dose_key is not None:
                anndata_fields.append(CategoricalObsField(EXTRA_KEYS.DOSE, dose_key))
            if perturbation_type_key is not None:
                anndata_fields.append(CategoricalObsField(EXTRA_KEYS.PERTURBATION_TYPE, perturbation_type_key))
        if time_key is not None:
            anndata_fields.append(NumericalObsField(EXTRA_KEYS.TIME, time_key))
            if sample_key is not None:
                anndata_fields.append(CategoricalObsField(EXTRA_KEYS.SAMPLE, sample_key))
        adata_manager = AnnDataManager(fields=anndata_fields, setup_method_args=setup_method_args)
        adata_manager.register_fields(adata, **kwargs)
        cls.register_manager(adata_manager)

    @torch.inference_mode()
    def get_latent_representation(
        self,
        adata: AnnData | None = None,
        indices: Sequence[int] | None = None,
        batch_size: int | None = None,
        key_added: str | None = None,
        progress_bar: bool | None = None,
        encoder: str = "context",
    ) -> np.ndarray:
        """Embed cells with the context encoder seeing every gene module.

        Cells stream through in minibatches (a backed AnnData is read a slice of rows at a time and never
        densified as a whole), so memory holds one minibatch and the ``(n_cells, n_latent)`` result.

        Parameters
        ----------
        adata
            AnnData with the model's genes; ``None`` uses the training AnnData.
        indices
            Cells to embed; ``None`` embeds all.
        batch_size
            Minibatch size; ``None`` uses ``scvi.settings.batch_size``.
        key_added
            If given, also store the latent in ``adata.obsm[key_added]`` (requires ``indices=None``).
        progress_bar
            Show a progress bar; ``None`` shows one from 100 minibatches on.
        encoder
            ``"context"`` (default): the encoder the objectives train. ``"target"``: its EMA copy, a smoother
            latent; on the benchmarks it separates labelled populations more (silhouette) but with fewer correct
            nearest neighbours, and with the count readout it predicts ECCITE-seq proteins from RNA better.

        Returns
        -------
        Latent of shape ``(n_cells, n_latent)``.

        Examples
        --------
        >>> import scvi, biojepa as bj
        >>> adata = scvi.data.synthetic_iid()
        >>> bj.BioJEPA.setup_anndata(adata)
        >>> model = bj.BioJEPA(adata, n_latent=8)
        >>> model.train(max_epochs=1, enable_progress_bar=False)
        >>> model.get_latent_representation(key_added="X_biojepa").shape
        (400, 8)
        """
        self._check_if_trained(warn=True)
        if encoder not in ("context", "target"):
            raise ValueError(f"`encoder` must be 'context' or 'target', got {encoder!r}.")
        owner = adata
        if adata is not None and self._multimodal and isinstance(adata, AnnData):
            adata = self._as_mudata(adata)  # RNA only: the other modalities are masked
        adata = self._registered(adata)  # categories never seen in training (a new cell line) are fine
        owner = self.adata if owner is None else owner
        if key_added is not None and indices is not None:
            raise ValueError("`key_added` stores a latent for every cell; pass `indices=None` with it.")
        loader = self._make_data_loader(adata=adata, indices=indices, batch_size=batch_size)
        self.module.eval()
        z = np.empty((len(loader.dataset), self.module.n_latent), dtype=np.float32)
        start = 0
        show = len(loader) >= 100 if progress_bar is None else progress_bar
        for tensors in track(loader, description="Embedding cells", disable=not show):
            inputs = self.module._get_inference_input(tensors)
            latent = self.module.inference(**inputs, masked=False, encoder=encoder)[MODULE_KEYS.Z].cpu().numpy()
            z[start : start + len(latent)] = latent
            start += len(latent)
        if key_added is not None:
            owner.obsm[key_added] = z
        return z
