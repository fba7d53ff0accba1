"""Dose baselines: the nearest training dose, and a line in log-dose through the training doses."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import anndata as ad
import numpy as np
import pandas as pd

from ..data import get_matrix
from ..perturbation import PERTURBATION_COLUMN, condition_frame, parse_perturbation, pseudobulk
from ._base import Genes, Group, PerturbationBaseline


class _DoseBaseline(PerturbationBaseline):
    """Per (covariate group, gene set): the mean change at every training dose, keyed by log(offset + mean dose).

    ``dose_offset`` 1 (default) keys by log(1 + dose); a small offset (e.g. a tenth of the lowest dose) keys by log
    dose, the usual axis of dose-response curves over several decades.
    """

    def __init__(self, dose_offset: float = 1.0) -> None:
        super().__init__()
        if not dose_offset > 0:
            raise ValueError(f"`dose_offset` must be positive, got {dose_offset!r}.")
        self.dose_offset = float(dose_offset)

    def fit(
        self,
        adata: ad.AnnData,
        perturbation_key: str,
        control_value: str,
        covariate_keys: Sequence[str] | None = None,
        layer: str | None = None,
        delimiter: str = "+",
        dose_key: str = "dose",
    ) -> _DoseBaseline:
        """As :meth:`PerturbationBaseline.fit`, plus ``dose_key``: the column of doses (see ``parse_dose``)."""
        super().fit(adata, perturbation_key, control_value, covariate_keys, layer, delimiter)
        if dose_key not in adata.obs:
            raise KeyError(f"Dose column {dose_key!r} not found in adata.obs; pass the column of doses as `dose_key`.")
        keys = condition_frame(adata.obs, perturbation_key, control_value, self.covariate_keys_, delimiter)
        labels = adata.obs[perturbation_key].astype(str).to_numpy()
        doses = adata.obs[dose_key].to_numpy()
        pairs = {(lab, d) for lab, d in zip(labels, doses, strict=True)}
        level = {
            pair: self._level(parse_perturbation(pair[0], control_value, delimiter, pair[1], dose_key=dose_key))
            for pair in pairs
        }
        keys["_level"] = [level[(lab, d)] for lab, d in zip(labels, doses, strict=True)]
        groups, means, _ = pseudobulk(get_matrix(adata, layer), keys)
        self.curves_: dict[Group, dict[Genes, list[tuple[float, np.ndarray]]]] = {}
        for i, row in groups.iterrows():
            group = tuple(row[self.covariate_keys_])
            if row[PERTURBATION_COLUMN] == control_value or group not in self.control_means_:
                continue
            genes = parse_perturbation(row[PERTURBATION_COLUMN], control_value, delimiter).genes
            curve = self.curves_.setdefault(group, {}).setdefault(genes, [])
            curve.append((float(row["_level"]), means[i] - self.control_means_[group]))
        self.dose_key_ = dose_key
        return self

    def _level(self, perturbation) -> float:
        doses = perturbation.doses or (1.0,)
        return float(np.log(self.dose_offset + np.mean(doses)))

    def predict_perturbation(
        self,
        perturbations: str | Sequence[str],
        covariates: Mapping[str, str | Sequence[str]] | None = None,
        dose: float | str | None = None,
    ) -> ad.AnnData:
        """As :meth:`PerturbationBaseline.predict_perturbation` at ``dose`` (``None``: 1) for every perturbation."""
        perturbations = [perturbations] if isinstance(perturbations, str) else list(perturbations)
        self._levels = [
            self._level(parse_perturbation(p, self.control_value_, self.delimiter_, 1.0 if dose is None else dose))
            for p in perturbations
        ]
        pred = super().predict_perturbation(perturbations, covariates)
        pred.obs[self.dose_key_] = pd.Categorical([str(1.0 if dose is None else dose)] * pred.n_obs)
        return pred

    def _predict_deltas(self, parsed: list[Genes], group: Group) -> np.ndarray:
        out = np.zeros((len(parsed), len(self.var_names_)))
        for k, (genes, level) in enumerate(zip(parsed, self._levels, strict=True)):
            curve = self.curves_.get(group, {}).get(genes)
            if curve:
                out[k] = self._at(sorted(curve, key=lambda c: c[0]), level)
        return out


class NearestDose(_DoseBaseline):
    """Predict the observed change at the training dose nearest in log-dose; no change for unseen gene sets.

    Examples
    --------
    >>> import anndata as ad, numpy as np, pandas as pd
    >>> from biojepa.baselines import NearestDose
    >>> obs = pd.DataFrame({"condition": ["control", "A", "A"], "dose": [0, 1, 100]}, index=list("xyz"))
    >>> base = NearestDose().fit(ad.AnnData(np.array([[0.0], [1.0], [3.0]]), obs=obs), "condition", "control")
    >>> low, high = base.predict_perturbation("A", dose=2), base.predict_perturbation("A", dose=50)
    >>> low.layers["delta"].tolist(), high.X.tolist()
    ([[1.0]], [[3.0]])
    """

    @staticmethod
    def _at(curve, level) -> np.ndarray:
        return curve[int(np.argmin([abs(x - level) for x, _ in curve]))][1]


class LogDoseLinear(_DoseBaseline):
    """Predict the change on the least-squares line in log(1 + dose) through the training doses of the gene set.

    With one training dose the change at that dose is predicted; unseen gene sets get no change.

    Examples
    --------
    >>> import anndata as ad, numpy as np, pandas as pd
    >>> from biojepa.baselines import LogDoseLinear
    >>> obs = pd.DataFrame({"condition": ["control", "A", "A"], "dose": [0, 0, 8]}, index=list("xyz"))
    >>> X = np.array([[0.0], [0.0], [np.log(9.0)]])
    >>> base = LogDoseLinear().fit(ad.AnnData(X, obs=obs), "condition", "control")
    >>> round(float(base.predict_perturbation("A", dose=2).layers["delta"][0, 0]), 4)  # log(1 + 2)
    1.0986
    """

    @staticmethod
    def _at(curve, level) -> np.ndarray:
        x = np.array([c[0] for c in curve])
        y = np.stack([c[1] for c in curve])  # (n_doses, G)
        if np.ptp(x) < 1e-12:
            return y.mean(0)
        slope = ((x - x.mean())[:, None] * (y - y.mean(0))).sum(0) / ((x - x.mean()) ** 2).sum()
        return y.mean(0) + slope * (level - x.mean())
