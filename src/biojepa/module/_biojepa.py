"""BioJEPAModule: wires tokenizer, context/target encoders and predictor; returns a LossOutput."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from scvi import REGISTRY_KEYS
from scvi.module.base import BaseModuleClass, LossOutput, auto_move_data
from torch.nn import functional as F

from .._constants import EXTRA_KEYS, INPUT_SCALES, LOSS_KEYS, MODULE_KEYS
from ..masks import ModuleMaskSampler
from ..nn import (
    CellEncoder,
    ConditionEmbedding,
    ExpressionHead,
    GeneTokenizer,
    Predictor,
    effective_rank,
    ema_update,
    make_target,
    masked_mse,
    vicreg_covariance,
    vicreg_variance,
)
from ._modalities import ModalityMixin
from ._readout import ReadoutMixin
from ._tasks import TaskSamplesMixin


class BioJEPAModule(ModalityMixin, ReadoutMixin, TaskSamplesMixin, BaseModuleClass):
    """JEPA over gene-module tokens.

    ``inference`` runs the encoders: the EMA target encoder on every module (no gradient) and the
    context encoder on the visible modules, giving the cell latent ``z``. ``generative`` runs the
    predictor, which regresses the target states of the masked modules from ``z`` and the condition.
    ``loss`` is the JEPA regression plus VICReg variance/covariance on ``z``.

    Parameters
    ----------
    n_input
        Number of genes.
    module_index
        ``(T, S)`` gene indices per module, padded with ``n_input``.
    gene_mean, gene_std
        Per-gene mean and standard deviation of normalized expression, used to standardize the input.
    gene_embedding_init
        ``(n_input, n_embed)`` initial gene-identity embeddings (e.g. co-expression loadings); random if ``None``.
    input_scale
        ``"counts"`` (normalized to log1p CP10k inside) or ``"log"`` (used as is).
    n_batch, n_cats_per_cov, n_continuous_cov
        Sizes of the covariates the predictor is conditioned on.
    n_latent, n_embed, n_layers, n_heads, mlp_ratio, dropout
        Cell latent width, token width and context/target transformer settings.
    predictor_dim, predictor_depth
        Predictor width and depth.
    pooling
        Where the cell latent is read from the context encoder's tokens: ``"mean"``, ``"cls"`` or ``"both"``.
    mask_ratio
        ``(low, high)`` fraction of modules hidden from the context encoder.
    mask_blocks
        ``None``: hidden modules scattered at random; ``k``: they form ``k`` runs of consecutive (co-expressed)
        modules, see :class:`~biojepa.masks.ModuleMaskSampler`.
    gene_dropout
        Fraction of genes set to their mean (zero after standardization) in the context encoder's input at each
        training step, on top of the module masking.
    readout_weight
        Weight of the expression readout: an MLP from the context latent ``z`` (with gradient, so it shapes the
        latent) to the standardized expression of every gene. ``0`` trains the pure JEPA objective.
    readout_likelihood
        ``"mse"``: the readout regresses standardized log expression; ``"mse_log"``: the same regression with each
        gene's squared error weighted by its variance (normalized to mean 1), i.e. log expression on its own scale,
        where genes weigh as in PCA; ``"nb"``: it is a negative-binomial decoder of the raw counts
        (:class:`~biojepa.nn.CountReadout`; counts input only).
    readout_genes
        ``"nb"`` readout only: the number of genes, drawn at random at each step, whose counts it scores
        (``None``: every gene). Its cost grows with this number.
    jepa_weight, variance_weight, covariance_weight
        Loss weights (VICReg-style 25/25/1 by default).
    condition_genes
        ``(n_conditions, K)`` perturbation-vocabulary indices of each registered perturbation label (``-1``
        padded; see :meth:`~biojepa.perturbation.PerturbationSetup.condition_genes`); ``None`` disables
        perturbation modelling.
    condition_dose
        ``(n_conditions, n_doses, K)`` per-gene doses of each (label, dose category) pair, or ``None``.
    condition_holdout
        ``(n_conditions,)`` whether a label is held out from the perturbation loss (its cells choose, after
        training, the interaction's strength, the ``interaction_scale`` buffer, and how far to trust tokens never
        trained, the ``novelty_scale`` buffer); ``None``: none.
    condition_group_holdout
        ``(n_pairs, 2)`` (label code, covariate-group code) pairs of singles held out from the perturbation loss in
        that group only (their cells choose, after training, how far a single's effect carries to a group that did
        not observe it, the ``context_transfer`` buffer); ``None``: none.
    n_extra_genes
        Perturbed genes that are not measured (learned identity embeddings).
    n_perturbation_types
        Categories of the perturbation type (0: none registered).
    perturbation_features
        ``(n_vocabulary, n_features)`` feature rows of the perturbation vocabulary (zeros where a perturbation has
        none), or ``None``.
    identity_dropout
        Probability, in training, of dropping a featured perturbation's identity term from its token.
    perturbation_dim
        Width of perturbation tokens.
    perturbation_weight, expression_weight
        Weights of the perturbation JEPA loss and of the expression head's loss (the head reads a
        stop-gradient latent, so its loss does not shape the latent).
    interaction_penalty
        Weight of the mean squared interaction term of combinations: the interaction stays at zero (additive
        composition) unless the data pay for it, and where per-gene effects can explain a combination alone
        (a member never observed alone) they do.
    time_scale
        Time step that RoPE positions are measured in (``None`` disables time courses).
    time_span
        Longest time span of a training sequence (predictions use context within it; 0: no limit).
    paired
        Whether cells of a time course are grouped into sequences by a sample code (else coupled by mini-batch
        optimal transport between consecutive time points of a covariate group).
    dynamic_weight, smoothness_weight
        Weights of the time-course JEPA loss (predicted vs target latent at queried time points) and of the
        temporal-consistency regulariser (squared change of latent velocity along sequences).
    coupling_epsilon
        Entropic regularisation of the population coupling, relative to the mean cost.
    modalities
        ``(kind, input_scale, n_features)`` of each modality, RNA first, when the input concatenates several
        (the module's modality mixin); ``None``: one modality.
    cross_modal_prob, cross_modal_weight, modality_weight
        Probability that a training step hides a whole modality from the context, weight of the cross-modal latent
        regression, and weight of the heads predicting each non-RNA modality from the stop-gradient latent.

    Examples
    --------
    >>> import scvi, biojepa as bj
    >>> adata = scvi.data.synthetic_iid()
    >>> bj.BioJEPA.setup_anndata(adata)
    >>> module = bj.BioJEPA(adata, n_latent=8).module  # built by the model from the registered AnnData
    >>> type(module).__name__, module.n_latent
    ('BioJEPAModule', 8)
    """

    def __init__(
        self,
        n_input: int,
        module_index: torch.Tensor,
        gene_mean: torch.Tensor,
        gene_std: torch.Tensor,
        gene_embedding_init: torch.Tensor | None = None,
        input_scale: str = INPUT_SCALES.LOG,
        n_batch: int = 0,
        n_cats_per_cov: Sequence[int] | None = None,
        n_continuous_cov: int = 0,
        n_latent: int = 32,
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
        readout_weight: float = 0.0,
        readout_likelihood: str = "mse",
        readout_genes: int | None = None,
        jepa_weight: float = 25.0,
        variance_weight: float = 25.0,
        covariance_weight: float = 1.0,
        condition_genes: torch.Tensor | None = None,
        condition_dose: torch.Tensor | None = None,
        condition_holdout: torch.Tensor | None = None,
        condition_group_holdout: torch.Tensor | None = None,
        n_extra_genes: int = 0,
        n_perturbation_types: int = 0,
        perturbation_features: torch.Tensor | None = None,
        identity_dropout: float = 0.5,
        perturbation_dim: int = 64,
        perturbation_weight: float = 1.0,
        expression_weight: float = 1.0,
        interaction_penalty: float = 1.0,
        time_scale: float | None = None,
        time_span: float = 0.0,
        paired: bool = False,
        dynamic_weight: float = 25.0,
        smoothness_weight: float = 0.0,
        coupling_epsilon: float = 0.05,
        modalities: Sequence | None = None,
        cross_modal_prob: float = 0.5,
        cross_modal_weight: float = 25.0,
        modality_weight: float = 1.0,
    ):
        super().__init__()
        if input_scale not in (INPUT_SCALES.COUNTS, INPUT_SCALES.LOG):
            raise ValueError(f"`input_scale` must be 'counts' or 'log', got {input_scale!r}.")
        self.input_scale = input_scale
        self.n_latent = n_latent
        self.jepa_weight, self.variance_weight, self.covariance_weight = jepa_weight, variance_weight, covariance_weight
        self.register_buffer("gene_mean", torch.as_tensor(gene_mean, dtype=torch.float32))
        self.register_buffer("gene_std", torch.as_tensor(gene_std, dtype=torch.float32))

        tokenizer = GeneTokenizer(torch.as_tensor(module_index), n_input, n_embed)
        if gene_embedding_init is not None:
            tokenizer.gene_embedding.data.copy_(torch.as_tensor(gene_embedding_init))
        self.mask_sampler = ModuleMaskSampler(tokenizer.n_modules, mask_ratio, mask_blocks)
        if not 0.0 <= gene_dropout < 1.0:
            raise ValueError(f"`gene_dropout` must be in [0, 1), got {gene_dropout}.")
        self.gene_dropout = gene_dropout
        self._init_readout(
            n_latent, n_input, input_scale, readout_weight, readout_likelihood, readout_genes, modalities is not None
        )
        self.context_encoder = CellEncoder(tokenizer, n_latent, n_layers, n_heads, mlp_ratio, dropout, pooling)
        self.target_encoder = make_target(self.context_encoder)
        self.predictor = Predictor(
            n_latent,
            tokenizer.n_modules,
            n_embed,
            predictor_dim,
            predictor_depth,
            max(1, predictor_dim // 16),
            perturbation_dim=perturbation_dim if condition_genes is not None else None,
        )
        self.condition = ConditionEmbedding(predictor_dim, n_batch, n_cats_per_cov or [], n_continuous_cov)
        sizes = [max(n_batch, 1), *(n_cats_per_cov or [])]  # covariate group: mixed radix of batch and categories
        strides = torch.ones(len(sizes), dtype=torch.long)
        for i in range(len(sizes) - 2, -1, -1):
            strides[i] = strides[i + 1] * sizes[i + 1]
        self.register_buffer("group_strides", strides)
        self.n_groups = int(torch.tensor(sizes).prod())
        self.dynamic = time_scale is not None
        self.register_buffer("time_scale", torch.tensor(float(time_scale or 1.0)))
        self.register_buffer("time_span", torch.tensor(float(time_span)))
        self.paired = paired
        self.dynamic_weight, self.smoothness_weight = dynamic_weight, smoothness_weight
        self.coupling_epsilon = coupling_epsilon
        self._init_modalities(modalities, n_input, module_index, cross_modal_prob, cross_modal_weight, modality_weight)
        self.perturbation = None
        self.expression_head = (
            ExpressionHead(n_latent, n_input) if (self.dynamic or condition_genes is not None) else None
        )
        self.expression_weight = expression_weight
        if condition_genes is not None:
            self._init_perturbation(
                condition_genes,
                condition_dose,
                condition_holdout,
                condition_group_holdout,
                n_embed,
                n_extra_genes,
                n_perturbation_types,
                perturbation_features,
                identity_dropout,
                perturbation_dim,
                n_batch,
                n_cats_per_cov or [],
                n_continuous_cov,
            )
            self.perturbation_weight = perturbation_weight
            self.interaction_penalty = interaction_penalty

    def normalize(self, x: torch.Tensor, size_factor: torch.Tensor | None = None) -> torch.Tensor:
        """Counts → log1p(CP10k) (library = ``size_factor`` if given); then per-gene standardize, clip ±10."""
        x = x.float()
        missing = torch.isnan(x)  # genes a query lacks (prepare_query_anndata): read as "not measured"
        x = torch.nan_to_num(x, nan=0.0)
        if self.input_scale == INPUT_SCALES.COUNTS:
            library = x.sum(1, keepdim=True) if size_factor is None else size_factor.view(-1, 1).float()
            x = torch.log1p(x * (1e4 / library.clamp(min=1e-8)))
        x = (x - self.gene_mean).div_(self.gene_std).clamp_(-10.0, 10.0)  # (B, G)
        return x.masked_fill_(missing, 0.0)  # at its mean, a missing gene adds nothing to its module's token

    def _get_inference_input(self, tensors: dict[str, torch.Tensor]) -> dict:
        return {
            "x": tensors[REGISTRY_KEYS.X_KEY],
            "size_factor": tensors.get(REGISTRY_KEYS.SIZE_FACTOR_KEY),
            "protein": tensors.get(EXTRA_KEYS.PROTEIN),
            "atac": tensors.get(EXTRA_KEYS.ATAC),
        }

    def _get_generative_input(self, tensors, inference_outputs) -> dict:
        return {
            "z": inference_outputs[MODULE_KEYS.Z],
            "masks_pred": inference_outputs.get(MODULE_KEYS.MASKS_PRED),
            "batch_index": tensors.get(REGISTRY_KEYS.BATCH_KEY),
            "cat_covs": tensors.get(REGISTRY_KEYS.CAT_COVS_KEY),
            "cont_covs": tensors.get(REGISTRY_KEYS.CONT_COVS_KEY),
            "target_z": inference_outputs.get(MODULE_KEYS.TARGET_Z),
            "perturbation": tensors.get(EXTRA_KEYS.PERTURBATION),
            "dose": tensors.get(EXTRA_KEYS.DOSE),
            "perturbation_type": tensors.get(EXTRA_KEYS.PERTURBATION_TYPE),
            "time": tensors.get(EXTRA_KEYS.TIME),
            "sample": tensors.get(EXTRA_KEYS.SAMPLE),
        }

    @auto_move_data
    def inference(
        self,
        x,
        size_factor=None,
        protein=None,
        atac=None,
        masked: bool = True,
        drop: Sequence[str] = (),
        encoder: str = "context",
    ) -> dict[str, torch.Tensor]:
        """Encode cells.

        With ``masked=True`` (training and validation): the target encoder sees every module and its
        layer-normed states at the masked modules become the regression target; the context encoder sees
        the visible modules. With ``masked=False``: the context encoder sees every module (embedding), except
        those of the modalities in ``drop`` (e.g. ``["protein"]`` to embed from RNA alone); ``encoder="target"``
        embeds with the EMA target encoder instead.
        """
        x, present = self.normalize_inputs(x, size_factor, protein, atac)
        token_mask = self.token_mask(present, drop)
        if not masked:
            _, z = (self.target_encoder if encoder == "target" else self.context_encoder)(x, token_mask=token_mask)
            return {MODULE_KEYS.Z: z}
        cross = self.cross_modal_masks(x.shape[0])
        if cross is None:
            masks_enc, masks_pred = self.mask_sampler(x.shape[0], device=x.device)
        else:
            masks_enc, masks_pred = cross[0], cross[1]
        # 1. target: EMA encoder on every module, no gradient
        with torch.no_grad():
            target_tokens, target_z = self.target_encoder(x, token_mask=token_mask)  # (B, T, D), (B, n_latent)
            target_tokens = F.layer_norm(target_tokens, target_tokens.shape[-1:])
            target = target_tokens.gather(1, masks_pred[..., None].expand(-1, -1, target_tokens.shape[-1]))
        # 2. context: online encoder on the visible modules (and, with gene dropout, some of their genes at the mean)
        x_context = x
        if self.training and self.gene_dropout > 0:
            x_context = x * (torch.rand_like(x) >= self.gene_dropout)
        _, z = self.context_encoder(x_context, keep=masks_enc, token_mask=token_mask)  # (B, n_latent)
        out = {
            MODULE_KEYS.Z: z,
            MODULE_KEYS.MASKS_PRED: masks_pred,
            MODULE_KEYS.TARGET: target,
            MODULE_KEYS.TARGET_Z: target_z,
            MODULE_KEYS.X_NORM: x,
        }
        if token_mask is not None:  # predict only modules the cell has, from a context it has
            visible = token_mask.gather(1, masks_enc).any(1, keepdim=True)
            out[MODULE_KEYS.PRED_WEIGHT] = token_mask.gather(1, masks_pred) & visible
            out[MODULE_KEYS.PRESENT] = present
            if cross is not None:
                out[MODULE_KEYS.CROSS] = torch.tensor(cross[2], device=x.device)
        return out

    @auto_move_data
    def generative(
        self,
        z,
        masks_pred,
        batch_index=None,
        cat_covs=None,
        cont_covs=None,
        target_z=None,
        perturbation=None,
        dose=None,
        perturbation_type=None,
        time=None,
        sample=None,
    ) -> dict[str, torch.Tensor]:
        """Run the predictor once over every task of the minibatch, packed (Patch n' Pack).

        Masked modules: predict the target states of the modules in ``masks_pred`` from ``z`` and the condition.
        Perturbations: predict each perturbed cell's target latent from the matched control population's latent
        plus the perturbation's shift (additive over genes plus the predictor's interaction of the set).
        Time courses: arrange the cells into sequences (by sample, or coupled by optimal transport) and predict
        the target latents of queried time points from the observed ones. The expression head decodes the
        stop-gradient target latent.
        """
        condition = self.condition(batch_index, cat_covs, cont_covs)
        segments = [self.predictor.module_segment(z, masks_pred, condition)]
        out: dict[str, torch.Tensor] = {}
        group = self.group_index(batch_index, cat_covs) if batch_index is not None else None
        pert = None
        if self.perturbation is not None and perturbation is not None and target_z is not None:
            pert = self._perturbation_samples(
                z, target_z.detach(), perturbation, dose, perturbation_type, group, batch_index, cat_covs, cont_covs
            )
            if pert["segment"] is not None:
                segments.append(pert["segment"])
        dyn = None
        if self.dynamic and time is not None and target_z is not None:
            dyn = self._time_samples(z, target_z.detach(), time, sample, group, perturbation, condition)
            if dyn is not None:
                segments.append(dyn["segment"])
        outputs = self.predictor(segments)
        out[MODULE_KEYS.PRED] = self.predictor.module_output(outputs[0], masks_pred)
        k = 1
        if pert is not None:
            interaction = pert["effects"].new_zeros(pert["effects"].shape[0], pert["effects"].shape[2])
            if pert["segment"] is not None:
                rows = pert["multi"].nonzero().view(-1)
                inter = self.predictor.interaction_output(outputs[k], pert["segment"].lengths)
                if pert["interaction_gate"] is not None:
                    inter = inter * pert["interaction_gate"][:, None]
                interaction = interaction.index_put((rows,), inter)
                k += 1
            out[MODULE_KEYS.PERT_PRED] = pert["control_z"] + pert["effects"].sum(1) + interaction
            out[MODULE_KEYS.PERT_ROWS] = pert["rows"]
            out[MODULE_KEYS.PERT_INTERACTION] = interaction
        if dyn is not None:
            out[MODULE_KEYS.TIME_PRED] = self.predictor.to_latent(outputs[k][dyn["query"]])
            out[MODULE_KEYS.TIME_TARGET] = dyn["target"]
            out[MODULE_KEYS.SMOOTHNESS] = dyn["smoothness"]
        if self.expression_head is not None and target_z is not None:
            out[MODULE_KEYS.EXPR_PRED] = self.expression_head(target_z.detach())
        if isinstance(self.readout, ExpressionHead):  # a CountReadout reads the counts in `loss`
            out[MODULE_KEYS.READOUT_PRED] = self.readout(z)  # with gradient: the readout shapes the latent
        if self.modalities is not None and target_z is not None:
            out[MODULE_KEYS.MODALITY_PRED] = {k: head(target_z.detach()) for k, head in self.modality_heads.items()}
        return out

    def loss(self, tensors, inference_outputs, generative_outputs) -> LossOutput:
        """JEPA regression (mean squared error per token element) + VICReg variance/covariance on ``z``."""
        z = inference_outputs[MODULE_KEYS.Z]
        pred = generative_outputs[MODULE_KEYS.PRED]
        target = inference_outputs[MODULE_KEYS.TARGET]
        if MODULE_KEYS.PRED_WEIGHT in inference_outputs:  # modules of missing modalities are not predicted
            w = inference_outputs[MODULE_KEYS.PRED_WEIGHT].float()
            jepa = ((pred - target).pow(2).mean(-1) * w).sum() / w.sum().clamp(min=1.0)
        else:
            jepa = F.mse_loss(pred, target)
        var = vicreg_variance(z)
        cov = vicreg_covariance(z)
        loss = self.jepa_weight * jepa + self.variance_weight * var + self.covariance_weight * cov
        extra = {}
        if self.modalities is not None:
            target_z = inference_outputs[MODULE_KEYS.TARGET_Z]
            mod = self.modality_losses(inference_outputs, generative_outputs, z, target_z)
            loss = loss + self.cross_modal_weight * mod["cross"] + self.modality_weight * mod["heads"]
            extra[LOSS_KEYS.CROSS_MODAL] = mod["cross"].detach()
            extra[LOSS_KEYS.MODALITY] = mod["heads"].detach()
        readout = self.readout_loss(tensors, inference_outputs, generative_outputs, z)
        if readout is not None:  # with gradient: the readout shapes the latent
            loss = loss + self.readout_weight * readout
            extra[LOSS_KEYS.READOUT] = readout.detach()
        if MODULE_KEYS.EXPR_PRED in generative_outputs:
            expr = F.mse_loss(generative_outputs[MODULE_KEYS.EXPR_PRED], inference_outputs[MODULE_KEYS.X_NORM])
            loss = loss + self.expression_weight * expr
            extra[LOSS_KEYS.EXPRESSION] = expr.detach()
        if MODULE_KEYS.PERT_PRED in generative_outputs:
            target_z = inference_outputs[MODULE_KEYS.TARGET_Z]
            rows = generative_outputs[MODULE_KEYS.PERT_ROWS]
            pert = masked_mse(generative_outputs[MODULE_KEYS.PERT_PRED], target_z, rows)
            inter = generative_outputs[MODULE_KEYS.PERT_INTERACTION].pow(2).mean()
            loss = loss + self.perturbation_weight * pert + self.interaction_penalty * inter
            extra[LOSS_KEYS.PERTURBATION] = pert.detach()
            extra[LOSS_KEYS.INTERACTION] = inter.detach()
        if self.dynamic:  # logged every step (zero when a minibatch holds no sequence) so history stays aligned
            dynamic = z.sum() * 0.0
            smooth = z.sum() * 0.0
            if MODULE_KEYS.TIME_PRED in generative_outputs:
                dynamic = F.mse_loss(
                    generative_outputs[MODULE_KEYS.TIME_PRED], generative_outputs[MODULE_KEYS.TIME_TARGET]
                )
                smooth = generative_outputs[MODULE_KEYS.SMOOTHNESS]
            loss = loss + self.dynamic_weight * dynamic + self.smoothness_weight * smooth
            extra[LOSS_KEYS.DYNAMIC] = dynamic.detach()
            extra[LOSS_KEYS.SMOOTHNESS] = smooth.detach()
        extra = {
            LOSS_KEYS.JEPA: jepa.detach(),
            LOSS_KEYS.VARIANCE: var.detach(),
            LOSS_KEYS.COVARIANCE: cov.detach(),
            LOSS_KEYS.EFFECTIVE_RANK: effective_rank(z.detach()),
            LOSS_KEYS.LATENT_STD: z.detach().std(0).mean(),
            **extra,
        }
        return LossOutput(loss=loss, n_obs_minibatch=z.shape[0], extra_metrics=extra)

    @torch.no_grad()
    def update_target(self, momentum: float) -> None:
        """EMA step of the target encoder towards the context encoder."""
        ema_update(self.target_encoder, self.context_encoder, momentum)
