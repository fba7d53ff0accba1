"""Perturbation tokens and the latent-space effect model (dose-scaled per-perturbation effects plus an interaction)."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

#: Index of a padding slot, and of a perturbation known only from its features (no identity embedding).
PAD, FEATURES_ONLY = -1, -2

#: ``softplus(_SLOPE_INIT) == 1``: dose-response slopes start at a Hill coefficient of 1.
_SLOPE_INIT = math.log(math.e - 1.0)


class PerturbationEffect(nn.Module):
    r"""Latent shift caused by a set of perturbations (genes or compounds, with doses) in a context.

    A perturbation token for vocabulary entry :math:`v` is built from its identity embedding :math:`E_v` (the
    tokenizer's ``E_g`` for a measured gene, a learned vector for a perturbation that is not a measured gene),
    optional features :math:`x_v` (GO-derived gene features, compound fingerprints) and a perturbation-type
    embedding: :math:`t_v = W\,\mathrm{LN}(E_v) + U x_v + e_{\mathrm{type}}`. A perturbation known only from its
    features (index ``FEATURES_ONLY``, e.g. a compound never seen in training) has no identity term; during
    training the identity term of a featured perturbation is dropped with probability ``identity_dropout``, so the
    features learn to stand in for it. The shift of a set :math:`S` at doses :math:`d` in context :math:`c` is

    .. math::
        s(S, d, c) = \sum_{v \in S} h_v(d_v)\, f([t_v; c]) + \min_{v \in S} h_v(d_v)\, I(S, c),

    where :math:`f` is an MLP, :math:`I` the interaction read from the model's :class:`~biojepa.nn.Predictor`
    (zero for single perturbations; its output layer starts at zero, so training starts from the additive
    composition), and :math:`h_v` a Hill dose-response,
    :math:`h_v(d) = d^{n_v} / (d^{n_v} + \mathrm{EC50}_v^{n_v})`, whose EC50 and slope :math:`n_v > 0` are read
    from the token (so an unseen compound gets its potency from its features). :math:`h_v` rises monotonically from
    0 at dose 0 and saturates at 1, so the size of the predicted shift grows monotonically with dose. Without doses
    :math:`h_v = 1`.

    Parameters
    ----------
    n_embed
        Width of the gene-identity embeddings.
    n_extra
        Number of perturbations without a measured gene (learned identity embeddings).
    n_latent
        Width of the latent shift.
    dim
        Width of perturbation tokens and context.
    n_types
        Number of perturbation types (0: no type embedding).
    use_dose
        Whether effects pass through a dose-response.
    n_features
        Width of perturbation feature rows (0: no features).
    identity_dropout
        Probability, in training, of dropping the identity term of a perturbation that has features.
    dose_center
        Natural log of a typical training dose, where EC50s start.

    Examples
    --------
    >>> import torch
    >>> from biojepa.nn import PerturbationEffect
    >>> effect = PerturbationEffect(n_embed=8, n_extra=1, n_latent=3, dim=16)
    >>> genes = torch.tensor([[0, -1], [0, 4]])  # a single, and gene 0 with the unmeasured gene 4
    >>> out = effect(torch.randn(4, 8), genes, context=torch.randn(2, 16))
    >>> out["shift"].shape, out["interaction"][0].abs().sum().item()  # singles have no interaction
    (torch.Size([2, 3]), 0.0)
    >>> dosed = PerturbationEffect(n_embed=8, n_extra=0, n_latent=3, dim=16, use_dose=True).eval()
    >>> embedding, ctx, gene = torch.randn(4, 8), torch.randn(1, 16), torch.tensor([[2]])
    >>> sizes = [dosed(embedding, gene, ctx, dose=torch.tensor([[d]]))["shift"].norm().item()
    ...          for d in (0.0, 0.1, 1.0, 10.0)]
    >>> sizes[0], sizes == sorted(sizes)  # no shift at dose 0, growing with dose
    (0.0, True)
    """

    def __init__(
        self,
        n_embed: int,
        n_extra: int,
        n_latent: int,
        dim: int = 64,
        n_types: int = 0,
        use_dose: bool = False,
        n_features: int = 0,
        identity_dropout: float = 0.5,
        dose_center: float = 0.0,
    ):
        super().__init__()
        self.extra_embedding = nn.Parameter(0.02 * torch.randn(n_extra, n_embed))
        self.token_norm = nn.LayerNorm(n_embed)
        self.to_token = nn.Linear(n_embed, dim)
        self.type_embedding = nn.Embedding(n_types, dim) if n_types > 0 else None
        self.features = nn.Linear(n_features, dim) if n_features > 0 else None
        self.identity_dropout = identity_dropout
        self.dose_response = None
        if use_dose:  # (log EC50 offset from dose_center, slope before softplus), starting at (0, Hill 1)
            self.dose_response = nn.Linear(dim, 2)
            nn.init.zeros_(self.dose_response.weight)
            nn.init.zeros_(self.dose_response.bias)
        self.register_buffer("dose_center", torch.tensor(float(dose_center)))
        self.effect = nn.Sequential(nn.Linear(2 * dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, n_latent))

    def tokens(self, gene_embedding, genes, ptype=None, features=None) -> torch.Tensor:
        """Perturbation tokens ``(B, K, dim)`` of vocabulary indices ``genes`` ``(B, K)``.

        ``genes`` holds ``PAD`` (-1) for padding and ``FEATURES_ONLY`` (-2) for a perturbation known only from its
        ``features`` ``(B, K, n_features)`` (zeros where a perturbation has none).
        """
        vocab = torch.cat([gene_embedding, self.extra_embedding])
        identity = self.to_token(self.token_norm(vocab[genes.clamp(min=0)]))  # (B, K, dim)
        keep = genes >= 0
        if features is not None and self.features is not None:
            has = features.abs().sum(-1) > 0
            if self.training and self.identity_dropout > 0:
                keep = keep & ~(has & (torch.rand_like(has, dtype=identity.dtype) < self.identity_dropout))
            tok = torch.where(keep[..., None], identity, 0.0) + self.features(features)
        else:
            tok = torch.where(keep[..., None], identity, 0.0)
        if self.type_embedding is not None and ptype is not None:
            tok = tok + self.type_embedding(ptype.long().view(-1))[:, None]
        return tok

    def gates(self, tokens: torch.Tensor, dose: torch.Tensor | None) -> torch.Tensor | None:
        """Hill dose-response ``(B, K)`` of tokens at doses ``(B, K)`` (``None`` without a dose-response)."""
        if self.dose_response is None or dose is None:
            return None
        params = self.dose_response(tokens)
        log_ec50 = self.dose_center + params[..., 0]
        slope = F.softplus(params[..., 1] + _SLOPE_INIT)
        dose = dose.float()
        gate = torch.sigmoid(slope * (torch.log(dose.clamp(min=1e-12)) - log_ec50))
        return torch.where(dose > 0, gate, 0.0)

    def additive(
        self, tokens: torch.Tensor, valid: torch.Tensor, context: torch.Tensor, gate: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Per-perturbation effects ``(B, K, n_latent)`` of tokens ``(B, K, dim)`` in ``context`` (zero at padding)."""
        ctx = context[:, None].expand(-1, tokens.shape[1], -1)
        weight = valid.to(tokens.dtype) if gate is None else valid * gate
        return self.effect(torch.cat([tokens, ctx], -1)) * weight[..., None]

    @staticmethod
    def interaction_gate(gate: torch.Tensor | None, valid: torch.Tensor) -> torch.Tensor | None:
        """``(B,)`` weakest member's dose-response, which scales a set's interaction (``None`` without doses)."""
        if gate is None:
            return None
        return torch.where(valid, gate, 1.0).min(1).values

    def forward(
        self, gene_embedding, genes, context, dose=None, ptype=None, interaction=None, features=None
    ) -> dict[str, torch.Tensor]:
        """Shift of each row's perturbation set.

        Parameters
        ----------
        gene_embedding
            ``(G, n_embed)`` gene-identity embeddings of the measured genes.
        genes
            ``(B, K)`` vocabulary indices, ``PAD`` for padding (a row of padding is control: zero shift),
            ``FEATURES_ONLY`` for a perturbation given by its ``features`` alone.
        context
            ``(B, dim)`` context vector (control population and covariates).
        dose, ptype
            ``(B, K)`` doses and ``(B,)`` perturbation-type codes, or ``None``.
        interaction
            Callable ``(context (B', dim), tokens (B', K, dim), valid (B', K)) -> (B', n_latent)`` giving the
            interaction of the rows with two or more perturbations (the model's predictor); ``None``: additive only.
        features
            ``(B, K, n_features)`` feature rows, or ``None``.

        Returns
        -------
        ``{"shift": (B, n_latent), "effects": (B, K, n_latent), "interaction": (B, n_latent), "gate": (B, K) or
        None}``; ``effects`` are the per-perturbation dose-scaled terms (zero at padding) and ``interaction`` is
        already scaled by the weakest member's dose-response.
        """
        valid = genes != PAD  # (B, K)
        tok = self.tokens(gene_embedding, genes, ptype, features)  # (B, K, dim)
        gate = self.gates(tok, dose)
        effects = self.additive(tok, valid, context, gate)  # (B, K, n_latent)
        inter = effects.new_zeros(effects.shape[0], effects.shape[2])
        multi = valid.sum(1) >= 2
        if interaction is not None and bool(multi.any()):
            inter = inter.index_put((multi.nonzero().view(-1),), interaction(context[multi], tok[multi], valid[multi]))
            strength = self.interaction_gate(gate, valid)
            if strength is not None:
                inter = inter * strength[:, None]
        return {"shift": effects.sum(1) + inter, "effects": effects, "interaction": inter, "gate": gate}


class ExpressionHead(nn.Module):
    """MLP from a (stop-gradient) cell latent to standardized log expression of every gene.

    Parameters
    ----------
    n_latent
        Latent width.
    n_genes
        Number of genes.
    n_hidden
        Hidden width.

    Examples
    --------
    >>> import torch
    >>> from biojepa.nn import ExpressionHead
    >>> ExpressionHead(n_latent=3, n_genes=10)(torch.randn(5, 3)).shape
    torch.Size([5, 10])
    """

    def __init__(self, n_latent: int, n_genes: int, n_hidden: int = 256):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(n_latent, n_hidden), nn.GELU(), nn.Linear(n_hidden, n_genes))

    def forward(self, z: torch.Tensor, genes: torch.Tensor | None = None) -> torch.Tensor:
        """``(B, n_latent)`` → ``(B, G)``, or only the columns of the gene indices ``genes`` ``(k,)``."""
        if genes is None:
            return self.net(z)
        out = self.net[-1]
        return F.linear(self.net[:-1](z), out.weight[genes], out.bias[genes])


def masked_mse(pred: torch.Tensor, target: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """Mean squared error over the rows selected by the boolean ``rows`` (0 when none is selected).

    Examples
    --------
    >>> import torch
    >>> from biojepa.nn import masked_mse
    >>> pred, target = torch.tensor([[1.0, 3.0], [5.0, 5.0]]), torch.zeros(2, 2)
    >>> masked_mse(pred, target, torch.tensor([True, False])).item()  # (1 + 9) / 2
    5.0
    >>> masked_mse(pred, target, torch.tensor([False, False])).item()
    0.0
    """
    if not bool(rows.any()):
        return pred.sum() * 0.0
    return F.mse_loss(pred[rows], target[rows])
