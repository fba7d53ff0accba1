"""Shared fit/predict machinery of the perturbation baselines."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping, Sequence

import anndata as ad
import numpy as np
import pandas as pd

from ..data import get_matrix
from ..perturbation import PERTURBATION_COLUMN, condition_frame, parse_perturbation, pseudobulk

logger = logging.getLogger(__name__)

Group = tuple[str, ...]
Genes = tuple[str, ...]


class PerturbationBaseline:
    """Base class of the perturbation baselines: pseudobulk fitting and the prediction :class:`~anndata.AnnData`.

    :meth:`fit` computes, for every covariate group (each combination of covariate values present in the
    training data), the control mean and the mean expression change (delta) of every training perturbation
    versus that control mean. Subclasses turn these into predicted deltas by implementing
    ``_predict_deltas``; :meth:`predict_perturbation` adds them to the control mean and returns the same
    :class:`~anndata.AnnData` layout as :meth:`biojepa.BioJEPA.predict_perturbation`, so a benchmark treats
    the model and every baseline alike. Requesting the control label always predicts the control mean.

    Attributes
    ----------
    var_names_
        Training genes.
    groups_
        Covariate groups with control cells, as tuples of covariate values (``[()]`` without covariates).
    control_means_
        Control mean expression of each group.
    deltas_
        For each group, the mean expression change of every non-control training perturbation, keyed by its
        sorted gene tuple.

    Examples
    --------
    >>> import anndata as ad, numpy as np, pandas as pd
    >>> from biojepa.baselines import NoChange
    >>> adata = ad.AnnData(np.array([[1.0, 2.0], [3.0, 2.0], [5.0, 0.0]]),
    ...                    obs=pd.DataFrame({"condition": ["control", "control", "A"]}, index=list("xyz")))
    >>> pred = NoChange().fit(adata, "condition", "control").predict_perturbation(["A"])
    >>> pred.X.tolist(), pred.layers["delta"].tolist()
    ([[2.0, 2.0]], [[0.0, 0.0]])
    """

    def __init__(self) -> None:
        self.is_fitted_ = False

    def fit(
        self,
        adata: ad.AnnData,
        perturbation_key: str,
        control_value: str,
        covariate_keys: Sequence[str] | None = None,
        layer: str | None = None,
        delimiter: str = "+",
    ) -> PerturbationBaseline:
        """Compute control means and per-perturbation deltas of ``adata`` (which is not modified).

        Parameters
        ----------
        adata
            Training cells; expression in ``adata.X`` or ``adata.layers[layer]`` on the scale predictions should
            have (e.g. log-normalized).
        perturbation_key
            Column of ``adata.obs`` with perturbation labels (``"KLF1"``, ``"KLF1+MAP2K6"``, GEARS ``"A+ctrl"``).
        control_value
            Label of control cells in ``adata.obs[perturbation_key]``.
        covariate_keys
            Columns of ``adata.obs`` whose value combinations define covariate groups (e.g. ``["cell_type"]``).
        layer
            Layer holding the expression; ``None`` for ``adata.X``.
        delimiter
            String joining the genes of a combination.

        Returns
        -------
        The fitted baseline.
        """
        covariate_keys = list(covariate_keys or [])
        keys = condition_frame(adata.obs, perturbation_key, control_value, covariate_keys, delimiter)
        if not (keys[PERTURBATION_COLUMN] == control_value).any():
            present = list(pd.unique(adata.obs[perturbation_key].astype(str)))
            raise ValueError(
                f"Control value {control_value!r} not found in adata.obs[{perturbation_key!r}]; present values "
                f"include {present[:5]}. Pass the label of unperturbed cells as `control_value`."
            )
        groups, means, _ = pseudobulk(get_matrix(adata, layer), keys)

        self.perturbation_key_, self.control_value_, self.delimiter_ = perturbation_key, control_value, delimiter
        self.covariate_keys_ = covariate_keys
        self.var_names_ = pd.Index(adata.var_names.copy())
        self.control_means_: dict[Group, np.ndarray] = {}
        self.deltas_: dict[Group, dict[Genes, np.ndarray]] = {}
        labels = groups[PERTURBATION_COLUMN].to_numpy()
        cov = [tuple(row) for row in groups[covariate_keys].to_numpy(dtype=object)]  # () without covariates
        for i, label in enumerate(labels):
            if label == control_value:
                self.control_means_[cov[i]] = means[i]
        no_control = sorted({g for g in cov if g not in self.control_means_})
        if no_control:
            warnings.warn(
                f"Covariate groups {no_control} of {covariate_keys} have no {control_value!r} cells; their cells "
                "are ignored because deltas versus control cannot be computed there.",
                UserWarning,
                stacklevel=2,
            )
        for i, label in enumerate(labels):
            if label != control_value and cov[i] in self.control_means_:
                genes = parse_perturbation(label, control_value, delimiter).genes
                self.deltas_.setdefault(cov[i], {})[genes] = means[i] - self.control_means_[cov[i]]
        self.groups_ = sorted(self.control_means_)
        for group in self.groups_:
            self.deltas_.setdefault(group, {})
        self._fit_deltas()
        self.is_fitted_ = True
        return self

    def predict_perturbation(
        self, perturbations: str | Sequence[str], covariates: Mapping[str, str | Sequence[str]] | None = None
    ) -> ad.AnnData:
        """Predicted mean expression of perturbations, one row per (perturbation, covariate group).

        Parameters
        ----------
        perturbations
            Labels to predict (``"SGK1"``, ``"KLF1+MAP2K6"``), parsed like the training labels.
        covariates
            Covariate values to predict in, e.g. ``{"cell_type": "k562"}`` (a value or a list of values per key).
            Keys left out take every value seen in training. ``None``: every covariate group seen in training.

        Returns
        -------
        New AnnData: ``obs`` holds the perturbation label column (named like ``perturbation_key``) and one column
        per covariate key; ``var_names`` are the training genes; ``X`` is the predicted mean expression (dense
        float32, input scale); ``layers["delta"]`` is ``X`` minus the control mean of the row's covariate group.

        Raises
        ------
        RuntimeError
            If the baseline is not fitted.
        KeyError
            For a covariate key not used in :meth:`fit` or a covariate value never seen with control cells.
        ValueError
            For a malformed perturbation label.
        """
        if not getattr(self, "is_fitted_", False):
            raise RuntimeError(f"{type(self).__name__} is not fitted yet; call `.fit(adata, ...)` first.")
        perturbations = [perturbations] if isinstance(perturbations, str) else list(perturbations)
        if not perturbations:
            raise ValueError("`perturbations` is empty; pass at least one perturbation label.")
        parsed = [parse_perturbation(p, self.control_value_, self.delimiter_).genes for p in perturbations]
        is_control = np.array([len(genes) == 0 for genes in parsed])
        X_rows, delta_rows, obs_rows = [], [], []
        for group in self._select_groups(covariates):
            delta = np.asarray(self._predict_deltas(parsed, group), dtype=np.float64)  # (n_perts, G)
            delta[is_control] = 0.0
            X_rows.append(self.control_means_[group][None, :] + delta)
            delta_rows.append(delta)
            covs = dict(zip(self.covariate_keys_, group, strict=True))
            obs_rows += [{self.perturbation_key_: p, **covs} for p in perturbations]
        obs = pd.DataFrame(obs_rows)
        obs.index = ["_".join(map(str, row)) for row in obs.itertuples(index=False, name=None)]
        pred = ad.AnnData(
            X=np.vstack(X_rows).astype(np.float32),
            obs=obs,
            var=pd.DataFrame(index=self.var_names_.copy()),
            layers={"delta": np.vstack(delta_rows).astype(np.float32)},
        )
        pred.obs_names_make_unique()
        pred.uns["method"] = type(self).__name__
        return pred

    def _select_groups(self, covariates: Mapping[str, str | Sequence[str]] | None) -> list[Group]:
        """Training covariate groups matching ``covariates`` (all of them for ``None``)."""
        if covariates is None:
            return list(self.groups_)
        if not isinstance(covariates, Mapping):
            raise TypeError(f"`covariates` must be a mapping like {{'cell_type': 'k562'}}, got {type(covariates)}.")
        wanted: dict[int, set[str]] = {}
        for key, values in covariates.items():
            if key not in self.covariate_keys_:
                raise KeyError(f"Covariate {key!r} was not used in fit; fitted covariate keys: {self.covariate_keys_}.")
            i = self.covariate_keys_.index(key)
            values = [values] if isinstance(values, str) or np.isscalar(values) else list(values)
            known = sorted({group[i] for group in self.groups_})
            for value in map(str, values):
                if value not in known:
                    raise KeyError(
                        f"Value {value!r} of covariate {key!r} was not seen in training (with control cells); "
                        f"known values: {known}."
                    )
            wanted[i] = set(map(str, values))
        selected = [g for g in self.groups_ if all(g[i] in vals for i, vals in wanted.items())]
        if not selected:
            raise KeyError(f"No training covariate group matches {dict(covariates)}; observed groups: {self.groups_}.")
        return selected

    def _fit_deltas(self) -> None:
        """Subclass hook run at the end of :meth:`fit`, once ``control_means_`` and ``deltas_`` are set."""

    def _predict_deltas(self, parsed: list[Genes], group: Group) -> np.ndarray:
        """Predicted deltas ``(len(parsed), n_genes)`` of the gene tuples ``parsed`` in covariate ``group``."""
        raise NotImplementedError
