"""No-change, training-mean and additive perturbation baselines."""

from __future__ import annotations

import logging
import warnings

import numpy as np

from ._base import Genes, Group, PerturbationBaseline

logger = logging.getLogger(__name__)


class NoChange(PerturbationBaseline):
    """Predict the control mean of the covariate group: a zero delta for every perturbation.

    Examples
    --------
    >>> import anndata as ad, numpy as np, pandas as pd
    >>> from biojepa.baselines import NoChange
    >>> adata = ad.AnnData(np.array([[1.0, 2.0], [3.0, 2.0], [5.0, 0.0]]),
    ...                    obs=pd.DataFrame({"condition": ["control", "control", "A"]}, index=list("xyz")))
    >>> NoChange().fit(adata, "condition", "control").predict_perturbation("A").X.tolist()
    [[2.0, 2.0]]
    """

    def _predict_deltas(self, parsed: list[Genes], group: Group) -> np.ndarray:
        return np.zeros((len(parsed), len(self.var_names_)))


class TrainMean(PerturbationBaseline):
    """Predict the control mean plus the mean delta of all training perturbations, whatever the perturbation.

    The mean is over perturbations (each weighs the same, whatever its number of cells) of the same covariate
    group. A group without any training perturbation gets the mean over every (group, perturbation) pair
    instead, with a warning.

    Examples
    --------
    >>> import anndata as ad, numpy as np, pandas as pd
    >>> from biojepa.baselines import TrainMean
    >>> adata = ad.AnnData(np.array([[1.0, 1.0], [3.0, 1.0], [1.0, 5.0]]),
    ...                    obs=pd.DataFrame({"condition": ["control", "A", "B"]}, index=list("xyz")))
    >>> TrainMean().fit(adata, "condition", "control").predict_perturbation("C").layers["delta"].tolist()
    [[1.0, 2.0]]
    """

    def _fit_deltas(self) -> None:
        self.mean_delta_ = {g: np.mean(list(d.values()), axis=0) for g, d in self.deltas_.items() if d}
        all_deltas = [delta for d in self.deltas_.values() for delta in d.values()]
        if not all_deltas:
            warnings.warn("No perturbed cells in the training data; TrainMean predicts zero deltas.", stacklevel=3)
        self.global_mean_delta_ = np.mean(all_deltas, axis=0) if all_deltas else np.zeros(len(self.var_names_))

    def _predict_deltas(self, parsed: list[Genes], group: Group) -> np.ndarray:
        mean = self.mean_delta_.get(group)
        if mean is None:
            warnings.warn(
                f"No training perturbations in covariate group {group} of {self.covariate_keys_}; TrainMean uses the "
                "mean delta over all groups there.",
                UserWarning,
                stacklevel=3,
            )
            mean = self.global_mean_delta_
        return np.tile(mean, (len(parsed), 1))


class Additive(PerturbationBaseline):
    r"""Predict the control mean plus the sum of the observed single-gene deltas of the perturbation's genes.

    For a perturbation of genes :math:`S` in covariate group :math:`c`,
    :math:`\hat x_{S,c} = \bar x_{\mathrm{ctrl},c} + \sum_{g \in S} \Delta_{g,c}`, where
    :math:`\Delta_{g,c}` is the mean expression of cells perturbed in :math:`g` alone minus the control mean,
    both in group :math:`c`. Fallbacks, never silent:

    - a gene seen as a single only in other covariate groups contributes the mean of its deltas over those
      groups (logged at INFO level);
    - a gene never seen as a single contributes a zero delta, and a :class:`UserWarning` names it.

    The prediction is always the sum of singles, also for a combination seen in training (a baseline does not
    memorize combinations). A single gene's prediction is therefore its observed delta.

    Examples
    --------
    >>> import anndata as ad, numpy as np, pandas as pd
    >>> from biojepa.baselines import Additive
    >>> adata = ad.AnnData(np.array([[1.0, 1.0], [3.0, 1.0], [1.0, 5.0]]),
    ...                    obs=pd.DataFrame({"condition": ["control", "A", "B"]}, index=list("xyz")))
    >>> Additive().fit(adata, "condition", "control").predict_perturbation("A+B").X.tolist()
    [[3.0, 5.0]]
    """

    def _fit_deltas(self) -> None:
        self.single_deltas_ = {g: {k[0]: v for k, v in d.items() if len(k) == 1} for g, d in self.deltas_.items()}
        pooled: dict[str, list[np.ndarray]] = {}
        for singles in self.single_deltas_.values():
            for gene, delta in singles.items():
                pooled.setdefault(gene, []).append(delta)
        self.pooled_single_deltas_ = {gene: np.mean(d, axis=0) for gene, d in pooled.items()}

    def _predict_deltas(self, parsed: list[Genes], group: Group) -> np.ndarray:
        singles = self.single_deltas_[group]
        out = np.zeros((len(parsed), len(self.var_names_)))
        unseen: dict[str, None] = {}
        borrowed: dict[str, None] = {}
        for i, genes in enumerate(parsed):
            for gene in genes:
                if gene in singles:
                    out[i] += singles[gene]
                elif gene in self.pooled_single_deltas_:
                    out[i] += self.pooled_single_deltas_[gene]
                    borrowed[gene] = None
                else:
                    unseen[gene] = None
        if borrowed:
            logger.info("Additive: singles %s taken from other covariate groups than %s.", list(borrowed), group)
        if unseen:
            where = f" in covariate group {group} of {self.covariate_keys_}" if self.covariate_keys_ else ""
            warnings.warn(
                f"Additive: genes {list(unseen)} were never observed as single perturbations{where}; "
                "their deltas are taken as 0.",
                UserWarning,
                stacklevel=3,
            )
        return out
