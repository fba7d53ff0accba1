"""The expression readout: an auxiliary term, read from the context latent with gradient, that shapes the latent."""

from __future__ import annotations

import torch
from scvi import REGISTRY_KEYS

from .._constants import INPUT_SCALES, MODULE_KEYS
from ..nn import CountReadout, ExpressionHead

#: Likelihoods of the readout: squared error of standardized log expression, the same weighted by each gene's
#: variance (log expression on its own scale), or a negative-binomial decoder of the raw counts.
READOUT_LIKELIHOODS = ("mse", "mse_log", "nb")


class ReadoutMixin:
    """Expression readout of :class:`~biojepa.module.BioJEPAModule` (inactive at ``readout_weight=0``).

    An MLP from the context latent ``z`` to every gene's standardized expression (``"mse"``, ``"mse_log"``), or a
    negative-binomial decoder of the counts of ``readout_genes`` random genes per step (``"nb"``). Unlike the
    expression head of perturbations and time courses, it reads ``z`` with gradient, so its loss shapes the latent.
    """

    def _init_readout(
        self,
        n_latent: int,
        n_input: int,
        input_scale: str,
        readout_weight: float,
        readout_likelihood: str,
        readout_genes: int | None,
        multimodal: bool,
    ) -> None:
        if readout_weight < 0:
            raise ValueError(f"`readout_weight` must be >= 0, got {readout_weight}.")
        if readout_likelihood not in READOUT_LIKELIHOODS:
            raise ValueError(f"`readout_likelihood` must be 'mse', 'mse_log' or 'nb', got {readout_likelihood!r}.")
        if readout_likelihood == "nb" and (input_scale != INPUT_SCALES.COUNTS or multimodal):
            raise ValueError(
                "`readout_likelihood='nb'` reads raw counts: set up RNA-only data with counts "
                f"(input_scale 'counts', got {input_scale!r}{', with other modalities' if multimodal else ''}), "
                "or use readout_likelihood='mse'."
            )
        if readout_genes is not None and readout_genes < 1:
            raise ValueError(f"`readout_genes` must be a positive number of genes or None, got {readout_genes}.")
        self.readout_weight = readout_weight
        self.readout_likelihood = readout_likelihood
        self.readout_genes = None if readout_genes is None or readout_genes >= n_input else int(readout_genes)
        self.readout = None
        if readout_weight > 0:
            head = CountReadout if readout_likelihood == "nb" else ExpressionHead
            self.readout = head(n_latent, n_input)

    @property
    def readout_gene_weight(self) -> torch.Tensor:
        """Per-gene weight of the squared-error readout: the variance over its mean (``"mse_log"``), else 1."""
        variance = self.gene_std.pow(2)
        if self.readout_likelihood != "mse_log":
            return torch.ones_like(variance)
        return variance / variance.mean().clamp(min=1e-12)

    def readout_loss(self, tensors, inference_outputs, generative_outputs, z: torch.Tensor) -> torch.Tensor | None:
        """The readout's loss on the minibatch (unweighted), or ``None`` without a readout."""
        if MODULE_KEYS.READOUT_PRED in generative_outputs:
            x_norm = inference_outputs[MODULE_KEYS.X_NORM]
            seen = torch.ones_like(x_norm)
            if MODULE_KEYS.PRESENT in inference_outputs:  # a modality a cell lacks is not read out
                sizes = torch.tensor([m.n_features for m in self.modalities], device=x_norm.device)
                seen = inference_outputs[MODULE_KEYS.PRESENT].repeat_interleave(sizes, dim=1).to(x_norm.dtype)
            err = (generative_outputs[MODULE_KEYS.READOUT_PRED] - x_norm).pow(2) * self.readout_gene_weight
            return (err * seen).sum() / seen.sum().clamp(min=1)
        if isinstance(self.readout, CountReadout):
            size_factor = tensors.get(REGISTRY_KEYS.SIZE_FACTOR_KEY)
            library = None if size_factor is None else size_factor.view(-1, 1).float()
            counts = tensors[REGISTRY_KEYS.X_KEY].float()
            genes = None
            if self.readout_genes is not None:  # a fresh random subset of genes at each step
                genes = torch.randperm(counts.shape[1], device=counts.device)[: self.readout_genes]
            return self.readout.nll(z, counts, library, genes)
        return None
