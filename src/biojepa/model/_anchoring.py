"""Anchoring decoded effects to observed changes: seen singles, their doses, and tokens never trained.

The decoded change of a learned effect (expression head on the shifted control latents) misses part of an observed
change: what a latent of ``n_latent`` dimensions does not carry. Anchoring adds the decoding's residual against the
observed change where one exists, so predictions start from what was measured and the model adds what it learned:

* a gene observed alone in the group (no doses): its residual there, else its mean residual over the groups that
  observed it (a gene seen in other cell lines);
* with doses: the residual at the training dose nearest in log dose, scaled by the ratio of the learned
  dose-response at the requested and at that dose (so an unseen dose moves along the learned Hill curve);
* a token the perturbation loss never trained and nobody observed (a gene never perturbed, a compound known from its
  features): the mean residual of the trained singles observed in the group, at the nearest doses — the systematic
  part of the decoding error that every perturbation shares.
"""

from __future__ import annotations

import numpy as np
from anndata import AnnData

from ..perturbation import CovariateGroup, Perturbation

#: Largest factor by which a residual is scaled to another dose.
MAX_DOSE_RATIO = 3.0


class AnchoringMixin:
    """Residuals of decoded effects against observed changes (see the module docstring)."""

    def _residual(self, adata: AnnData, state: dict, gene: str, dose: float | None = None) -> np.ndarray:
        """Observed change of a single (at ``dose``) minus the decoding of its learned effect, in a group."""
        key = (gene, dose)
        if key not in state["residuals"]:
            group = state["group"]
            rows = group.singles[gene]
            if dose is not None:
                rows = rows[np.isclose(group.single_doses[gene], dose)]
            p = Perturbation((gene,), None if dose is None else (dose,))
            single = self._effect(group, state["context"], p, state["ptype"])
            observed = self._mean_log_expression(adata, rows) - state["log_ctrl_mean"]
            state["residuals"][key] = (observed - self._decode(state["z_ctrl_t"], single["shift"]), single["gate"])
        return state["residuals"][key][0]

    def _nearest_dose(self, group: CovariateGroup, gene: str, dose: float) -> float | None:
        """Training dose of ``gene``'s single in ``group`` nearest to ``dose`` in log dose (``None``: none)."""
        measured = np.unique(group.single_doses.get(gene, np.array([])))
        measured = measured[np.isfinite(measured) & (measured > 0)]
        if measured.size == 0 or not dose > 0:
            return None
        return float(measured[np.argmin(np.abs(np.log(measured) - np.log(dose)))])

    def _dose_ratio(self, state: dict, gene: str, dose: float, nearest: float) -> float:
        """Learned dose-response of ``gene`` at ``dose`` over that at ``nearest`` (clipped)."""
        if np.isclose(dose, nearest):
            return 1.0
        gates = []
        for d in (dose, nearest):
            gate = self._effect(state["group"], state["context"], Perturbation((gene,), (d,)), state["ptype"])["gate"]
            gates.append(float(gate[0, 0]))
        return float(np.clip(gates[0] / max(gates[1], 1e-6), 0.0, MAX_DOSE_RATIO))

    def _dosed_residual(self, adata: AnnData, state: dict, gene: str, dose: float) -> np.ndarray | None:
        """Residual of ``gene`` at its nearest training dose in the group, moved to ``dose`` (``None``: unobserved)."""
        if gene not in state["group"].singles:
            return None
        nearest = self._nearest_dose(state["group"], gene, dose)
        if nearest is None:
            return None
        return self._residual(adata, state, gene, nearest) * self._dose_ratio(state, gene, dose, nearest)

    def _typical_residual(self, adata: AnnData, state: dict, dose: float | None) -> np.ndarray | float:
        """Mean residual of the trained singles observed in the group (at their nearest doses to ``dose``)."""
        cache = state.setdefault("typical", {})
        if dose not in cache:
            trained = self._setup().trained_vocabulary()
            vocabulary = self._setup().vocabulary
            names = [vocabulary[i] for i in np.flatnonzero(trained)]
            parts = []
            for gene in names:
                if gene not in state["group"].singles:
                    continue
                try:
                    if dose is None:
                        parts.append(self._residual(adata, state, gene))
                    else:
                        part = self._dosed_residual(adata, state, gene, dose)
                        if part is not None:
                            parts.append(part)
                except ValueError:  # e.g. an ambiguous perturbation type in the group: not used
                    continue
            cache[dose] = np.mean(parts, axis=0) if parts else 0.0
        return cache[dose]

    def _anchor(
        self, adata: AnnData, own: dict, gene: str, dose: float | None, novel: bool, every: list[CovariateGroup], state
    ) -> np.ndarray | float:
        """What anchoring adds for one member of a perturbation (see the module docstring)."""
        group = own["group"]
        if gene in group.singles:
            if dose is None:
                return self._residual(adata, own, gene)
            found = self._dosed_residual(adata, own, gene, dose)
            if found is not None:
                return found
        others = []
        for other in every:
            if gene in other.singles and other.values != group.values:
                try:
                    if dose is None:
                        others.append(self._residual(adata, state(other), gene))
                    else:
                        found = self._dosed_residual(adata, state(other), gene, dose)
                        if found is not None:
                            others.append(found)
                except ValueError:  # e.g. a group whose perturbation type is ambiguous: not used
                    continue
        if others:
            return np.mean(others, axis=0)
        return self._typical_residual(adata, own, dose) if novel else 0.0

    def _anchored_observed(self, group: CovariateGroup, perturbation: Perturbation, dosed: bool) -> bool:
        """Whether anchoring returns the observed change: a single observed in the group (at that dose)."""
        if len(perturbation.genes) != 1 or perturbation.genes[0] not in group.singles:
            return False
        gene = perturbation.genes[0]
        if not dosed:
            return True
        dose = perturbation.doses[0] if perturbation.doses is not None else 1.0
        return bool(np.isclose(group.single_doses.get(gene, np.array([])), dose).any())
