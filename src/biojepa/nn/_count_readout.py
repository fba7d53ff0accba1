"""Count-likelihood readout: a negative-binomial decoder from the cell latent to the raw counts."""

from __future__ import annotations

import torch
from scvi.distributions import NegativeBinomial
from torch import nn

from ._perturbation import ExpressionHead

_EPS = 1e-8


class CountReadout(nn.Module):
    """Negative-binomial decoder of every gene's counts from a cell latent, with a per-gene dispersion.

    The mean is ``library * softmax(ExpressionHead(z))`` (the MLP of :class:`ExpressionHead`, its output read as
    logits over genes) and the inverse dispersion ``exp(log_theta)`` is learned per
    gene, as in scVI's decoder. Unlike a squared error on standardized log expression, which gives a barely
    expressed gene as much weight as a marker, the likelihood weighs each count by how much it says.

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
    >>> from biojepa.nn import CountReadout
    >>> head = CountReadout(n_latent=3, n_genes=10)
    >>> counts = torch.poisson(torch.full((5, 10), 2.0))
    >>> head.nll(torch.randn(5, 3), counts).shape  # one value: mean over cells and genes
    torch.Size([])
    """

    def __init__(self, n_latent: int, n_genes: int, n_hidden: int = 256):
        super().__init__()
        self.net = ExpressionHead(n_latent, n_genes, n_hidden)
        self.log_theta = nn.Parameter(torch.zeros(n_genes))

    def forward(self, z: torch.Tensor, library: torch.Tensor) -> NegativeBinomial:
        """scvi-tools' count distribution of cells with latent ``z`` ``(B, n_latent)`` and libraries ``(B, 1)``."""
        mu = library * torch.softmax(self.net(z), dim=-1)
        return NegativeBinomial(mu=mu, theta=self.log_theta.exp())

    def nll(
        self,
        z: torch.Tensor,
        counts: torch.Tensor,
        library: torch.Tensor | None = None,
        genes: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Negative log-likelihood of ``counts``, averaged over cells and genes (library: the counts' sums).

        The same value as ``-self(z, library).log_prob(counts).mean()``, evaluated sparsely: a zero count's
        log-likelihood is ``theta * log(theta / (theta + mu))``, so the three log-gamma terms, the costliest
        operations of the loss, run only where a count is nonzero (about a tenth of a droplet matrix). This
        is why it is written out here rather than taken from scvi-tools' ``log_nb_positive``.

        ``genes`` (gene indices) scores only those genes: their logits are computed alone, the softmax runs over
        them and the library is their counts' sum (``library`` is then ignored). Under a multinomial model,
        the counts of a subset of genes given their total follow the same model with the probabilities
        renormalized over the subset, so a random subset per step fits every gene's logit at a fraction of the
        cost of all of them.
        """
        theta = self.log_theta.exp()  # (G,)
        if genes is not None:
            counts, theta = counts[:, genes], theta[genes]
            library = counts.sum(1, keepdim=True)
        elif library is None:
            library = counts.sum(1, keepdim=True)
        mu = library.clamp(min=1.0) * torch.softmax(self.net(z, genes), dim=-1)  # (B, G)
        log_theta_mu = torch.log(theta + mu + _EPS)
        ll = (theta * (torch.log(theta + _EPS) - log_theta_mu)).sum()
        rows, cols = counts.nonzero(as_tuple=True)
        x, th = counts[rows, cols], theta[cols]
        ll = (
            ll
            + (
                x * (torch.log(mu[rows, cols] + _EPS) - log_theta_mu[rows, cols])
                + torch.lgamma(x + th)
                - torch.lgamma(th)
                - torch.lgamma(x + 1.0)
            ).sum()
        )
        return -ll / counts.numel()
