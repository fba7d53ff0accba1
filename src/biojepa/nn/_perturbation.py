"""Perturbation tokens and the latent-space effect model (additive per-gene effects plus an interaction)."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class PerturbationEffect(nn.Module):
    r"""Latent shift caused by a set of perturbed genes in a context.

    A perturbation token for vocabulary entry :math:`v` is built from its gene-identity embedding
    :math:`E_v` (the tokenizer's ``E_g`` for a measured gene, a learned vector for a perturbed gene that is
    not measured), plus a perturbation-type embedding and a projection of :math:`\log(1 + \mathrm{dose})`:
    :math:`t_v = W\,\mathrm{LN}(E_v) + e_{\mathrm{type}} + w\log(1 + d_v)`. The shift of a set :math:`S` in
    context :math:`c` is additive over genes plus an interaction,

    .. math::
        s(S, c) = \sum_{v \in S} f([t_v; c]) + I(S, c),

    where :math:`f` is an MLP and :math:`I` is read from the model's :class:`~biojepa.nn.Predictor`, which
    attends among the context and the perturbation tokens (passed in as ``interaction``). :math:`I` is zero
    for single perturbations and its output layer starts at zero, so training starts from the additive
    composition.

    Parameters
    ----------
    n_embed
        Width of the gene-identity embeddings.
    n_extra
        Number of perturbed genes without a measured gene (learned embeddings).
    n_latent
        Width of the latent shift.
    dim
        Width of perturbation tokens and context.
    n_types
        Number of perturbation types (0: no type embedding).
    use_dose
        Whether tokens get a dose term.

    Examples
    --------
    >>> import torch
    >>> from biojepa.nn import PerturbationEffect
    >>> effect = PerturbationEffect(n_embed=8, n_extra=1, n_latent=3, dim=16)
    >>> genes = torch.tensor([[0, -1], [0, 4]])  # a single, and gene 0 with the unmeasured gene 4
    >>> out = effect(torch.randn(4, 8), genes, context=torch.randn(2, 16))
    >>> out["shift"].shape, out["interaction"][0].abs().sum().item()  # singles have no interaction
    (torch.Size([2, 3]), 0.0)
    """

    def __init__(
        self,
        n_embed: int,
        n_extra: int,
        n_latent: int,
        dim: int = 64,
        n_types: int = 0,
        use_dose: bool = False,
    ):
        super().__init__()
        self.extra_embedding = nn.Parameter(0.02 * torch.randn(n_extra, n_embed))
        self.token_norm = nn.LayerNorm(n_embed)
        self.to_token = nn.Linear(n_embed, dim)
        self.type_embedding = nn.Embedding(n_types, dim) if n_types > 0 else None
        self.dose = nn.Linear(1, dim, bias=False) if use_dose else None
        self.effect = nn.Sequential(nn.Linear(2 * dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, n_latent))

    def tokens(self, gene_embedding, genes, dose=None, ptype=None) -> torch.Tensor:
        """Perturbation tokens ``(B, K, dim)`` of vocabulary indices ``genes`` ``(B, K)`` (``-1`` = padding)."""
        vocab = torch.cat([gene_embedding, self.extra_embedding, gene_embedding.new_zeros(1, gene_embedding.shape[1])])
        index = torch.where(genes < 0, vocab.shape[0] - 1, genes)
        tok = self.to_token(self.token_norm(vocab[index]))  # (B, K, dim)
        if self.type_embedding is not None and ptype is not None:
            tok = tok + self.type_embedding(ptype.long().view(-1))[:, None]
        if self.dose is not None and dose is not None:
            tok = tok + self.dose(torch.log1p(dose.float().clamp(min=0))[..., None])
        return tok

    def additive(self, tokens: torch.Tensor, valid: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """Per-gene effects ``(B, K, n_latent)`` of tokens ``(B, K, dim)`` in ``context`` (zero at padding)."""
        ctx = context[:, None].expand(-1, tokens.shape[1], -1)
        return self.effect(torch.cat([tokens, ctx], -1)) * valid[..., None]

    def forward(
        self, gene_embedding, genes, context, dose=None, ptype=None, interaction=None
    ) -> dict[str, torch.Tensor]:
        """Shift of each row's gene set.

        Parameters
        ----------
        gene_embedding
            ``(G, n_embed)`` gene-identity embeddings of the measured genes.
        genes
            ``(B, K)`` vocabulary indices, ``-1`` for padding (a row of padding is control: zero shift).
        context
            ``(B, dim)`` context vector (control population and covariates).
        dose, ptype
            ``(B, K)`` doses and ``(B,)`` perturbation-type codes, or ``None``.
        interaction
            Callable ``(context (B', dim), tokens (B', K, dim), valid (B', K)) -> (B', n_latent)`` giving the
            interaction of the rows with two or more genes (the model's predictor); ``None``: additive only.

        Returns
        -------
        ``{"shift": (B, n_latent), "effects": (B, K, n_latent), "interaction": (B, n_latent)}``; ``effects`` are
        the per-gene additive terms (zero at padding).
        """
        valid = genes >= 0  # (B, K)
        tok = self.tokens(gene_embedding, genes, dose, ptype)  # (B, K, dim)
        effects = self.additive(tok, valid, context)  # (B, K, n_latent)
        inter = effects.new_zeros(effects.shape[0], effects.shape[2])
        multi = valid.sum(1) >= 2
        if interaction is not None and bool(multi.any()):
            inter = inter.index_put((multi.nonzero().view(-1),), interaction(context[multi], tok[multi], valid[multi]))
        return {"shift": effects.sum(1) + inter, "effects": effects, "interaction": inter}


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

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """``(B, n_latent)`` → ``(B, G)``."""
        return self.net(z)


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
