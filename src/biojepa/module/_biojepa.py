"""BioJEPAModule: wires tokenizer, context/target encoders and predictor; returns a LossOutput."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from scvi import REGISTRY_KEYS
from scvi.module.base import BaseModuleClass, LossOutput, auto_move_data
from torch import nn
from torch.nn import functional as F

from .._constants import EXTRA_KEYS, INPUT_SCALES, LOSS_KEYS, MODULE_KEYS
from ..masks import ModuleMaskSampler
from ..nn import (
    CellEncoder,
    ExpressionHead,
    GeneTokenizer,
    MaskedModulePredictor,
    PerturbationEffect,
    effective_rank,
    ema_update,
    make_target,
    masked_mse,
    vicreg_covariance,
    vicreg_variance,
)


class ConditionEmbedding(nn.Module):
    """Sum of embeddings of the batch, the categorical covariates and a projection of continuous ones."""

    def __init__(self, dim: int, n_batch: int, n_cats_per_cov: Sequence[int], n_continuous_cov: int):
        super().__init__()
        self.batch = nn.Embedding(n_batch, dim) if n_batch > 1 else None
        self.cats = nn.ModuleList(nn.Embedding(n, dim) for n in n_cats_per_cov)
        self.cont = nn.Linear(n_continuous_cov, dim, bias=False) if n_continuous_cov > 0 else None

    @property
    def is_empty(self) -> bool:
        """True when there is nothing to condition on."""
        return self.batch is None and len(self.cats) == 0 and self.cont is None

    def forward(self, batch_index, cat_covs, cont_covs) -> torch.Tensor | None:
        """Return ``(B, dim)`` or ``None`` when there is nothing to condition on."""
        if self.is_empty:
            return None
        out = 0.0
        if self.batch is not None:
            out = out + self.batch(batch_index.long().view(-1))
        for i, emb in enumerate(self.cats):
            out = out + emb(cat_covs[:, i].long())
        if self.cont is not None:
            out = out + self.cont(cont_covs.float())
        return out


class BioJEPAModule(BaseModuleClass):
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
    mask_ratio
        ``(low, high)`` fraction of modules hidden from the context encoder.
    jepa_weight, variance_weight, covariance_weight
        Loss weights (VICReg-style 25/25/1 by default).
    condition_genes
        ``(n_conditions, K)`` perturbation-vocabulary indices of each registered perturbation label (``-1``
        padded; see :class:`~biojepa.data.PerturbationTables`); ``None`` disables perturbation modelling.
    condition_dose
        ``(n_conditions, n_doses, K)`` per-gene doses of each (label, dose category) pair, or ``None``.
    n_extra_genes
        Perturbed genes that are not measured (learned identity embeddings).
    n_perturbation_types
        Categories of the perturbation type (0: none registered).
    perturbation_dim
        Width of perturbation tokens.
    perturbation_weight, expression_weight
        Weights of the perturbation JEPA loss and of the expression head's loss (the head reads a
        stop-gradient latent, so its loss does not shape the latent).
    interaction_penalty
        Weight of the mean squared interaction term of combinations: the interaction stays at zero (additive
        composition) unless the data pay for it, and where per-gene effects can explain a combination alone
        (a member never observed alone) they do.

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
        mask_ratio: tuple[float, float] = (0.25, 0.5),
        jepa_weight: float = 25.0,
        variance_weight: float = 25.0,
        covariance_weight: float = 1.0,
        condition_genes: torch.Tensor | None = None,
        condition_dose: torch.Tensor | None = None,
        n_extra_genes: int = 0,
        n_perturbation_types: int = 0,
        perturbation_dim: int = 64,
        perturbation_weight: float = 1.0,
        expression_weight: float = 1.0,
        interaction_penalty: float = 1.0,
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
        self.mask_sampler = ModuleMaskSampler(tokenizer.n_modules, mask_ratio)
        self.context_encoder = CellEncoder(tokenizer, n_latent, n_layers, n_heads, mlp_ratio, dropout)
        self.target_encoder = make_target(self.context_encoder)
        self.predictor = MaskedModulePredictor(
            n_latent, tokenizer.n_modules, n_embed, predictor_dim, predictor_depth, max(1, predictor_dim // 16)
        )
        self.condition = ConditionEmbedding(predictor_dim, n_batch, n_cats_per_cov or [], n_continuous_cov)
        self.perturbation = None
        if condition_genes is not None:
            self._init_perturbation(
                condition_genes,
                condition_dose,
                n_input,
                n_embed,
                n_extra_genes,
                n_perturbation_types,
                perturbation_dim,
                n_batch,
                n_cats_per_cov or [],
                n_continuous_cov,
            )
            self.perturbation_weight, self.expression_weight = perturbation_weight, expression_weight
            self.interaction_penalty = interaction_penalty

    def _init_perturbation(
        self, condition_genes, condition_dose, n_input, n_embed, n_extra, n_types, dim, n_batch, n_cats, n_cont
    ) -> None:
        """Perturbation effect model, expression head and the per-covariate-group control latents."""
        self.register_buffer("condition_genes", torch.as_tensor(condition_genes).long())
        self.register_buffer(
            "condition_dose", torch.as_tensor(condition_dose).float() if condition_dose is not None else None
        )
        self.perturbation = PerturbationEffect(
            n_embed, n_extra, self.n_latent, dim, n_types, condition_dose is not None, depth=1, n_heads=2
        )
        self.perturbation_condition = ConditionEmbedding(dim, n_batch, n_cats, n_cont)
        self.context_projection = nn.Linear(self.n_latent, dim)
        self.expression_head = ExpressionHead(self.n_latent, n_input)
        sizes = [max(n_batch, 1), *n_cats]  # covariate group = mixed-radix code of batch and categorical covariates
        strides = torch.ones(len(sizes), dtype=torch.long)
        for i in range(len(sizes) - 2, -1, -1):
            strides[i] = strides[i + 1] * sizes[i + 1]
        self.register_buffer("group_strides", strides)
        n_groups = int(torch.tensor(sizes).prod())
        self.register_buffer("control_latent", torch.zeros(n_groups, self.n_latent))
        self.register_buffer("control_seen", torch.zeros(n_groups))

    def group_index(self, batch_index, cat_covs=None) -> torch.Tensor:
        """Covariate-group code of each cell: mixed radix over the batch and the categorical covariates."""
        cols = [batch_index.long().view(-1, 1)]
        if cat_covs is not None and cat_covs.shape[-1] > 0:
            cols.append(cat_covs.long())
        return (torch.cat(cols, 1) * self.group_strides).sum(1)

    def perturbation_context(self, control_z, batch_index=None, cat_covs=None, cont_covs=None) -> torch.Tensor:
        """Context vector of the effect model: the control population's latent plus the covariates."""
        context = self.context_projection(control_z)
        condition = self.perturbation_condition(batch_index, cat_covs, cont_covs)
        return context if condition is None else context + condition

    def lookup_condition(self, codes, dose_codes=None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Vocabulary indices ``(B, K)`` and doses of registered perturbation/dose category codes."""
        codes = codes.long().view(-1)
        genes = self.condition_genes[codes]
        dose = None
        if self.condition_dose is not None and dose_codes is not None:
            dose = self.condition_dose[codes, dose_codes.long().view(-1)]
        return genes, dose

    def normalize(self, x: torch.Tensor, size_factor: torch.Tensor | None = None) -> torch.Tensor:
        """Counts → log1p(CP10k) (library = ``size_factor`` if given); then per-gene standardize, clip ±10."""
        x = x.float()
        if self.input_scale == INPUT_SCALES.COUNTS:
            library = x.sum(1, keepdim=True) if size_factor is None else size_factor.view(-1, 1).float()
            x = torch.log1p(x * (1e4 / library.clamp(min=1e-8)))
        return (x - self.gene_mean).div_(self.gene_std).clamp_(-10.0, 10.0)  # (B, G)

    def _get_inference_input(self, tensors: dict[str, torch.Tensor]) -> dict:
        return {
            "x": tensors[REGISTRY_KEYS.X_KEY],
            "size_factor": tensors.get(REGISTRY_KEYS.SIZE_FACTOR_KEY),
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
        }

    @auto_move_data
    def inference(self, x, size_factor=None, masked: bool = True) -> dict[str, torch.Tensor]:
        """Encode cells.

        With ``masked=True`` (training and validation): the target encoder sees every module and its
        layer-normed states at the masked modules become the regression target; the context encoder sees
        the visible modules. With ``masked=False``: the context encoder sees every module (embedding).
        """
        x = self.normalize(x, size_factor)
        if not masked:
            _, z = self.context_encoder(x)
            return {MODULE_KEYS.Z: z}
        masks_enc, masks_pred = self.mask_sampler(x.shape[0], device=x.device)
        # 1. target: EMA encoder on every module, no gradient
        with torch.no_grad():
            target_tokens, target_z = self.target_encoder(x)  # (B, T, D), (B, n_latent)
            target_tokens = F.layer_norm(target_tokens, target_tokens.shape[-1:])
            target = target_tokens.gather(1, masks_pred[..., None].expand(-1, -1, target_tokens.shape[-1]))
        # 2. context: online encoder on the visible modules
        _, z = self.context_encoder(x, keep=masks_enc)  # (B, n_latent)
        return {
            MODULE_KEYS.Z: z,
            MODULE_KEYS.MASKS_PRED: masks_pred,
            MODULE_KEYS.TARGET: target,
            MODULE_KEYS.TARGET_Z: target_z,
            MODULE_KEYS.X_NORM: x,
        }

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
    ) -> dict[str, torch.Tensor]:
        """Predict the target states of the modules in ``masks_pred`` from ``z`` and the condition.

        With perturbations registered, also predict each perturbed cell's target latent from the matched
        control population's latent plus the perturbation's shift, and decode the stop-gradient target latent
        into expression.
        """
        condition = self.condition(batch_index, cat_covs, cont_covs)
        out = {MODULE_KEYS.PRED: self.predictor(z, masks_pred, condition)}
        if self.perturbation is None or perturbation is None or target_z is None:
            return out
        genes, doses = self.lookup_condition(perturbation, dose)
        group = self.group_index(batch_index, cat_covs)
        target_z = target_z.detach()
        if self.training:
            self._update_control_latents(target_z, group, (genes < 0).all(1))
        control_z = self.control_latent[group]
        context = self.perturbation_context(control_z, batch_index, cat_covs, cont_covs)
        effect = self.perturbation(
            self.context_encoder.tokenizer.gene_embedding, genes, context, doses, perturbation_type
        )
        out[MODULE_KEYS.PERT_PRED] = control_z + effect["shift"]
        out[MODULE_KEYS.PERT_ROWS] = (genes >= 0).any(1) & (self.control_seen[group] > 0)
        out[MODULE_KEYS.PERT_INTERACTION] = effect["interaction"]
        out[MODULE_KEYS.EXPR_PRED] = self.expression_head(target_z)
        return out

    @torch.no_grad()
    def _update_control_latents(self, target_z, group, is_control, momentum: float = 0.9) -> None:
        """Running mean of the target latents of control cells, per covariate group."""
        if not bool(is_control.any()):
            return
        g, zc = group[is_control], target_z[is_control]
        sums = torch.zeros_like(self.control_latent).index_add_(0, g, zc)
        counts = torch.zeros_like(self.control_seen).index_add_(0, g, torch.ones_like(g, dtype=zc.dtype))
        present = counts > 0
        means = sums[present] / counts[present, None]
        first = self.control_seen[present] == 0
        old = self.control_latent[present]
        self.control_latent[present] = torch.where(first[:, None], means, momentum * old + (1 - momentum) * means)
        self.control_seen[present] += counts[present]

    def loss(self, tensors, inference_outputs, generative_outputs) -> LossOutput:
        """JEPA regression (mean squared error per token element) + VICReg variance/covariance on ``z``."""
        z = inference_outputs[MODULE_KEYS.Z]
        pred = generative_outputs[MODULE_KEYS.PRED]
        target = inference_outputs[MODULE_KEYS.TARGET]
        jepa = F.mse_loss(pred, target)
        var = vicreg_variance(z)
        cov = vicreg_covariance(z)
        loss = self.jepa_weight * jepa + self.variance_weight * var + self.covariance_weight * cov
        extra = {}
        if MODULE_KEYS.PERT_PRED in generative_outputs:
            target_z = inference_outputs[MODULE_KEYS.TARGET_Z]
            rows = generative_outputs[MODULE_KEYS.PERT_ROWS]
            pert = masked_mse(generative_outputs[MODULE_KEYS.PERT_PRED], target_z, rows)
            expr = F.mse_loss(generative_outputs[MODULE_KEYS.EXPR_PRED], inference_outputs[MODULE_KEYS.X_NORM])
            inter = generative_outputs[MODULE_KEYS.PERT_INTERACTION].pow(2).mean()
            loss = loss + self.perturbation_weight * pert + self.expression_weight * expr
            loss = loss + self.interaction_penalty * inter
            extra = {
                LOSS_KEYS.PERTURBATION: pert.detach(),
                LOSS_KEYS.EXPRESSION: expr.detach(),
                LOSS_KEYS.INTERACTION: inter.detach(),
            }
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
