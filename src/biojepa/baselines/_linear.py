"""Linear baseline of Ahlmann-Eltze, Huber & Anders (2024): a bilinear ridge model on PCA gene embeddings."""

from __future__ import annotations

import warnings

import numpy as np

from ._base import Genes, Group, PerturbationBaseline


class Linear(PerturbationBaseline):
    r"""Linear perturbation model :cite:p:`ahlmanneltze2024deep`.

    Fitted separately in each covariate group. Let :math:`M` (genes × conditions) be the training pseudobulk
    expression of the group, control included, and :math:`Y` the matching deltas versus the control mean
    (the control column is 0). Then

    - gene embedding :math:`G` (genes × K): the top-K principal-component scores of :math:`M` with each
      condition centered over genes (``prcomp`` of the paper's code), i.e. :math:`U_K S_K` of the centered
      :math:`M`;
    - perturbation embedding :math:`P` (conditions × K): the row of :math:`G` of the perturbed gene, so a
      gene that was measured but never perturbed still has an embedding; a combination gets the sum of its
      genes' rows (:math:`P_{a+b} = G_a + G_b`, an extension: the paper embeds singles only); control gets 0;
    - :math:`b` the row mean of :math:`Y` and :math:`W` the ridge solution of
      :math:`\min_W \lVert Y - b\mathbf{1}^\top - G W P^\top \rVert_F^2 + \lambda \lVert W \rVert_F^2`
      (ridge on both sides as in the paper),
      :math:`W = (G^\top G + \lambda I)^{-1} G^\top (Y - b\mathbf{1}^\top) P (P^\top P + \lambda I)^{-1}`.

    The prediction for perturbation :math:`p` is :math:`\bar x_{\mathrm{ctrl}} + G W P_p^\top + b`;
    requesting control returns the control mean. Training perturbations with a gene that is not measured
    (not in ``var_names``) have no embedding and are left out of the fit, with a warning; predicting one
    raises a :class:`ValueError` naming the genes.

    Parameters
    ----------
    n_components
        Number K of principal components of the gene embedding (capped by the number of conditions).
    ridge
        Ridge penalty :math:`\lambda`.

    Examples
    --------
    >>> import anndata as ad, numpy as np, pandas as pd
    >>> from biojepa.baselines import Linear
    >>> rng = np.random.default_rng(0)
    >>> genes = [f"g{i}" for i in range(8)]
    >>> labels = ["control"] * 5 + [g for g in genes[:6] for _ in range(5)]
    >>> obs = pd.DataFrame({"condition": labels}, index=[f"cell{i}" for i in range(len(labels))])
    >>> adata = ad.AnnData(rng.normal(5, 1, (len(labels), 8)), obs=obs)
    >>> adata.var_names = genes
    >>> pred = Linear(n_components=3).fit(adata, "condition", "control").predict_perturbation(["g7", "g6+g7"])
    >>> pred.shape
    (2, 8)
    """

    def __init__(self, n_components: int = 10, ridge: float = 0.1) -> None:
        super().__init__()
        if int(n_components) < 1:
            raise ValueError(f"`n_components` must be a positive integer, got {n_components!r}.")
        if ridge < 0:
            raise ValueError(f"`ridge` must be non-negative, got {ridge!r}.")
        self.n_components = int(n_components)
        self.ridge = float(ridge)

    def _embed(self, genes: Genes, gene_embedding: np.ndarray) -> np.ndarray:
        """Perturbation embedding: sum of the gene-embedding rows of ``genes``; zero for control."""
        return gene_embedding[self.var_names_.get_indexer(list(genes))].sum(0)  # (K,)

    def _fit_deltas(self) -> None:
        self.gene_embedding_: dict[Group, np.ndarray] = {}
        self.weights_: dict[Group, np.ndarray] = {}
        self.offset_: dict[Group, np.ndarray] = {}
        measured = set(self.var_names_)
        skipped: dict[str, None] = {}
        for group in self.groups_:
            train = [genes for genes in self.deltas_[group] if set(genes) <= measured]
            skipped.update({self.delimiter_.join(g): None for g in self.deltas_[group] if not set(g) <= measured})
            ctrl = self.control_means_[group]
            M = np.column_stack([ctrl] + [ctrl + self.deltas_[group][g] for g in train])  # (n_genes, C)
            Y = np.column_stack([np.zeros_like(ctrl)] + [self.deltas_[group][g] for g in train])  # (n_genes, C)
            Mc = M - M.mean(0, keepdims=True)  # each condition centered over genes
            U, S, _ = np.linalg.svd(Mc, full_matrices=False)
            k = min(self.n_components, S.size)
            G = U[:, :k] * S[:k]  # (n_genes, K)
            P = np.vstack([np.zeros(k)] + [self._embed(g, G) for g in train])  # (C, K)
            b = Y.mean(1)  # (n_genes,)
            eye = self.ridge * np.eye(k)
            left = np.linalg.solve(G.T @ G + eye, G.T @ (Y - b[:, None]) @ P)  # (K, K)
            W = np.linalg.solve((P.T @ P + eye).T, left.T).T  # left @ inv(PᵀP + λI)
            self.gene_embedding_[group], self.weights_[group], self.offset_[group] = G, W, b
        if skipped:
            names = list(skipped)
            warnings.warn(
                f"Linear: {len(names)} training perturbations target genes that are not measured (not in var_names) "
                f"and have no embedding; they are left out of the fit (e.g. {names[:5]}).",
                UserWarning,
                stacklevel=3,
            )

    def _predict_deltas(self, parsed: list[Genes], group: Group) -> np.ndarray:
        missing = sorted({gene for genes in parsed for gene in genes if gene not in self.var_names_})
        if missing:
            raise ValueError(
                f"Linear cannot predict perturbations of genes that are not measured: {missing} are not in "
                "var_names, so they have no gene embedding. Use Additive for them or drop them."
            )
        G, W, b = self.gene_embedding_[group], self.weights_[group], self.offset_[group]
        P = np.vstack([self._embed(genes, G) for genes in parsed])  # (n_perts, K)
        return (G @ W @ P.T + b[:, None]).T  # (n_perts, n_genes)
