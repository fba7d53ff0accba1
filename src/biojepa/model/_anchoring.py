"""Anchoring decoded effects to observed changes: seen singles, their doses, and tokens never trained.

The decoded change of a learned effect (expression head on the shifted control latents) misses part of an observed
change: what a latent of ``n_latent`` dimensions does not carry. Anchoring adds the decoding's residual against the
observed change where one exists, so predictions start from what was measured and the model adds what it learned:

* a gene observed alone in the group (no doses): its residual there (a seen single returns its observed change);
  inside a combination, that residual denoised first (:meth:`AnchoringMixin._denoised_residual`), so the sampling
  noise of each member's mean does not add up in the composition; else, seen alone in other groups with the same
  perturbation type (a gene knocked out in other cell lines), the group's mean observed change plus the shares of
  the gene's learned own effect and of its own part observed there that predict singles held out in one group
  (:mod:`biojepa.model._context_transfer`). Much of a perturbation's change in a cell line is shared by every
  perturbation of that line; it is measured in the line itself, and only as much of what is specific to the gene is
  borrowed as the held-out pairs confirm. In a model without such pairs (too few singles seen in several groups to
  hold some out), or in a group without observed trained singles (a cell line never seen perturbed), the whole
  residual of the other groups;
* with doses: the residual fitted over the single's training doses as a multiple of its learned dose-response,
  evaluated at the requested dose (so an unseen dose moves along the learned Hill curve); an unseen dose between
  measured ones blends it with what the least-squares line in log dose through the measured changes leaves over the
  decoding, by a weight chosen by leaving measured doses out (:mod:`biojepa.model._dose_interpolation`); inside a
  combination, denoised the same way as without doses;
* a token the perturbation loss never trained with this perturbation type and nobody observed (a gene never
  perturbed, or only knocked down when an activation is asked for; a compound known from its features): the mean
  observed change of the trained singles observed in the group, at the nearest doses, minus the decoding of their
  mean learned effect (:meth:`AnchoringMixin._novel_anchor`), so that the token's prediction is that mean change
  plus what its own (shrunk) deviation from the mean effect changes; for a measured gene without doses, plus the
  expression prior of :mod:`biojepa.model._coexpression` (its own level moves as the trained singles' own genes do,
  and the genes that move with it across those singles follow), each part weighted as leaving each trained single
  out confirms. When a library is screened in expression space, a token with a feature row (a compound, an
  unmeasured gene with external features) also gets the features prior of :mod:`biojepa.model._feature_prior`
  (what its most similar trained singles did beyond the mean change, weighted the same way): it sharpens the
  ranking, but not the predicted changes, so :meth:`~biojepa.BioJEPA.predict_perturbation` leaves it out.
"""

from __future__ import annotations

import functools
import logging
from typing import NamedTuple

import numpy as np
from anndata import AnnData

from ..perturbation import CovariateGroup, Perturbation, PerturbationFeatures
from ._coexpression import CoexpressionPrior, prior_weights
from ._context_transfer import ContextTransferMixin, _same_type
from ._dose_interpolation import interpolation_weight, log_dose_line
from ._feature_prior import FeaturePrior, feature_prior

logger = logging.getLogger(__name__)


@functools.lru_cache(maxsize=8)
def _measured_columns(setup) -> dict[str, int]:
    """Expression column of each measured gene of a (frozen, hashable) setup."""
    return {g: i for i, g in enumerate(setup.vocabulary[: setup.n_measured])}


class _Single(NamedTuple):
    """A single observed alone in a group (at one dose): what anchoring reads of it."""

    residual: np.ndarray  # observed change minus the decoding of the learned effect
    change: np.ndarray  # observed change of the mean log expression
    variance: np.ndarray  # per-gene sampling variance of that mean
    gate: float  # learned dose-response at the dose (1 without doses)


class AnchoringMixin(ContextTransferMixin):
    """Residuals of decoded effects against observed changes (see the module docstring)."""

    def _single(self, adata: AnnData, state: dict, gene: str, dose: float | None = None) -> _Single:
        """A single's observed change (at ``dose``), its sampling variance and its decoding residual, in a group."""
        key = (gene, dose)
        if key not in state["residuals"]:
            group = state["group"]
            rows = group.singles[gene]
            if dose is not None:
                rows = rows[np.isclose(group.single_doses[gene], dose)]
            p = Perturbation((gene,), None if dose is None else (dose,))
            single = self._effect(group, state["context"], p, state["ptype"])
            mean, variance = self._log_moments(adata, rows)
            observed = mean - state["log_ctrl_mean"]
            residual = observed - self._decode(state["z_ctrl_t"], single["shift"])
            gate = 1.0 if single["gate"] is None else float(single["gate"][0, 0])
            state["residuals"][key] = _Single(residual, observed, variance, gate)
        return state["residuals"][key]

    def _residual(self, adata: AnnData, state: dict, gene: str, dose: float | None = None) -> np.ndarray:
        """Observed change of a single (at ``dose``) minus the decoding of its learned effect, in a group."""
        return self._single(adata, state, gene, dose).residual

    def _denoised_residual(self, adata: AnnData, state: dict, gene: str, dose: float | None = None):
        r"""Residual of ``gene`` in the group, each gene's part shrunk towards the group's mean residual by its noise.

        The observed mean change of a single over its :math:`n` cells carries sampling noise of per-gene variance
        :math:`v_g = s_g^2 / n`, and so does its residual :math:`r`. With :math:`\bar r` the mean residual of the
        group's trained singles and :math:`d = r - \bar r`, each gene keeps the share of its deviation that stands
        above the noise, :math:`\hat r_g = \bar r_g + \max(0, 1 - v_g / d_g^2)\, d_g`: the empirical Wiener
        factor, :math:`d_g^2 - v_g` estimating the squared signal of :math:`d_g^2`. A gene the single moves well
        beyond its noise keeps the observed change; one within its noise moves to what every perturbation of the
        group shares. No constant is set by hand: the factor follows from the measured variances. It matters where
        the members' noises add up, in a combination. With ``dose``, the residual fitted along the dose-response
        and its variance through that fit (:meth:`_dose_fit`), and the mean residual at ``dose`` (``None`` where
        the single was not measured in the group). The raw residual where the group has no other trained single
        to shrink towards.
        """
        cache = state.setdefault("denoised", {})
        if (gene, dose) not in cache:
            r = noise = None
            if dose is None:
                r, _, noise, _ = self._single(adata, state, gene)
            elif (found := self._dose_residual(adata, state, gene, dose)) is not None:
                r, noise = found
            mean = self._typical_residual(adata, state, dose)
            if r is None or not np.ndim(mean):  # unmeasured, or no trained single observed in the group
                cache[(gene, dose)] = r
            else:
                deviation = r - mean
                keep = np.clip(1.0 - noise / np.maximum(deviation**2, 1e-12), 0.0, 1.0)
                cache[(gene, dose)] = mean + keep * deviation
        return cache[(gene, dose)]

    def _at_dose(self, state: dict, gene: str, dose: float) -> dict:
        """Learned effect of ``gene`` alone at ``dose`` in the group of ``state`` (its shift and dose-response gate)."""
        return self._effect(state["group"], state["context"], Perturbation((gene,), (dose,)), state["ptype"])

    def _dose_points(self, adata: AnnData, state: dict, gene: str) -> tuple[np.ndarray, list[_Single]]:
        """The positive doses at which ``gene`` was measured alone in the group (increasing), and its single there."""
        group = state["group"]
        measured = np.unique(group.single_doses.get(gene, np.array([]))) if gene in group.singles else np.array([])
        measured = measured[np.isfinite(measured) & (measured > 0)]
        return measured, [self._single(adata, state, gene, float(d)) for d in measured]

    def _dose_fit(self, adata: AnnData, state: dict, gene: str) -> tuple[np.ndarray, np.ndarray] | None:
        r"""Residual per unit of dose-response of ``gene`` in the group and its per-gene sampling variance.

        Least squares over the measured doses :math:`d_i` of the single, :math:`\rho(d_i) \approx h(d_i)\, r`:
        :math:`r = \sum_i h_i \rho_i / \sum_i h_i^2`, of variance :math:`\sum_i h_i^2 v_i / (\sum_i h_i^2)^2`
        with :math:`v_i` that of the single's mean at :math:`d_i`. ``None`` where the single was not measured in
        the group at a positive dose.
        """
        fits = state.setdefault("dose_fits", {})
        if gene not in fits:
            _, singles = self._dose_points(adata, state, gene)
            num = sum(s.gate * s.residual for s in singles)
            var = sum(s.gate**2 * s.variance for s in singles)
            den = sum(s.gate**2 for s in singles)
            fits[gene] = None if den <= 1e-12 else (num / den, var / den**2)
        return fits[gene]

    def _dose_weight(self, adata: AnnData, state: dict) -> float:
        """Weight of the log-dose line at unseen interior doses, chosen by leaving measured doses out.

        Each interior measured dose of each single of the group is predicted from the single's other doses, by the
        fit along the dose-response and by the log-dose line through their observed changes
        (:func:`~biojepa.model._dose_interpolation.interpolation_weight`).
        """
        if "dose_weight" not in state:
            cases = []
            for gene in state["group"].singles:
                doses, singles = self._dose_points(adata, state, gene)
                if len(doses) < 3:
                    continue
                den = sum(s.gate**2 for s in singles)
                num = self._dose_fit(adata, state, gene)[0] * den  # the fit's numerator, sum of h_i rho_i
                for i in range(1, len(doses) - 1):
                    left = [j for j in range(len(doses)) if j != i]
                    rest = den - singles[i].gate ** 2
                    line = log_dose_line(
                        doses[left],
                        [singles[j].change for j in left],
                        [singles[j].variance for j in left],
                        float(doses[i]),
                    )
                    if rest <= 1e-12 or line is None:
                        continue
                    fitted = singles[i].gate * (num - singles[i].gate * singles[i].residual) / rest
                    decoded = singles[i].change - singles[i].residual  # the decoding at the left-out dose
                    cases.append((singles[i].residual, fitted, line[0] - decoded))
            state["dose_weight"] = interpolation_weight(cases)
        return state["dose_weight"]

    def _dose_residual(
        self, adata: AnnData, state: dict, gene: str, dose: float
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """Residual of ``gene`` at ``dose`` and its sampling variance (module docstring); ``None`` if never measured."""
        fit = self._dose_fit(adata, state, gene)
        if fit is None or not dose > 0:
            return None
        effect = self._at_dose(state, gene, float(dose))
        h = float(effect["gate"][0, 0])
        value, variance = h * fit[0], h * h * fit[1]
        doses, singles = self._dose_points(adata, state, gene)  # cached by the fit
        found = log_dose_line(doses, [s.change for s in singles], [s.variance for s in singles], float(dose))
        if found is not None:  # an unseen dose inside the measured range: only then is the weight needed
            weight = self._dose_weight(adata, state)
            decoded = self._decode(state["z_ctrl_t"], effect["shift"])  # the line is of changes: leave the decoding
            value = (1 - weight) * value + weight * (found[0] - decoded)
            variance = (1 - weight) ** 2 * variance + weight**2 * found[1]
        return value, variance

    def _dosed_residual(self, adata: AnnData, state: dict, gene: str, dose: float) -> np.ndarray | None:
        """Residual of ``gene`` at ``dose`` (:meth:`_dose_residual`), ``None`` where never measured in the group.

        ``h(dose) r``, ``r`` fitted over its training doses, blended at unseen interior doses with the log-dose line
        through its measured changes (less the decoding). So the part of the effect the latent misses follows the
        learned dose-response and the sampling noise of each dose's cells averages out.
        """
        found = self._dose_residual(adata, state, gene, dose)
        return None if found is None else found[0]

    def _typical_singles(self, adata: AnnData, state: dict, dose: float | None) -> list[tuple[str, np.ndarray]]:
        """``(gene, residual)`` of the trained singles observed in the group (at ``dose``)."""
        cache = state.setdefault("typical_singles", {})
        if dose not in cache:
            trained = self._trained_with(state["ptype"])[0]
            vocabulary = self._setup().vocabulary
            names = [vocabulary[i] for i in np.flatnonzero(trained)]
            parts = []
            for gene in names:
                if gene not in state["group"].singles:
                    continue
                try:
                    if dose is None:
                        parts.append((gene, self._residual(adata, state, gene)))
                    else:
                        part = self._dosed_residual(adata, state, gene, dose)
                        if part is not None:
                            parts.append((gene, part))
                except ValueError:  # e.g. an ambiguous perturbation type in the group: not used
                    continue
            cache[dose] = parts
        return cache[dose]

    def _typical_residual(self, adata: AnnData, state: dict, dose: float | None) -> np.ndarray | float:
        """Mean residual of the trained singles observed in the group (at ``dose``)."""
        parts = self._typical_singles(adata, state, dose)
        return np.mean([r for _, r in parts], axis=0) if parts else 0.0

    def _novel_anchor(self, adata: AnnData, state: dict, dose: float | None) -> np.ndarray | float:
        r"""What anchoring adds for a token nobody observed: the trained singles' mean change minus the decoded mean.

        :math:`\frac1n \sum_c (\text{observed}_c) - \text{decode}(\bar e)`, with :math:`\bar e` the mean learned
        effect of the trained singles observed in the group (at ``dose``). With the token's effect shrunk to
        :math:`\bar e + \alpha (e - \bar e)` (``novelty_scale``), the prediction is the mean observed change of
        those singles plus what the token's own deviation changes in the decoding: at :math:`\alpha = 0`, exactly
        the mean change. The decoding of the mean effect is not the mean of the decodings (the head is nonlinear),
        so the mean residual alone would leave that gap in the prediction.
        """
        cache = state.setdefault("novel", {})
        if dose not in cache:
            genes, changes = self._peer_changes(adata, state, dose)
            if not genes:
                cache[dose] = 0.0
            else:
                mean_effect = self._mean_effect(state["context"], dose, state["ptype"])[None]
                cache[dose] = changes.mean(0) - self._decode(state["z_ctrl_t"], mean_effect)
        return cache[dose]

    def _peer_changes(self, adata: AnnData, state: dict, dose: float | None) -> tuple[list[str], np.ndarray]:
        """Names and changes ``(n, G)`` of the trained singles observed in the group (at ``dose``, along its fit)."""
        cache = state.setdefault("peer_changes", {})
        if dose not in cache:
            group, context, ptype = state["group"], state["context"], state["ptype"]
            genes, changes = [], []
            for gene, residual in self._typical_singles(adata, state, dose):
                genes.append(gene)
                if dose is None:  # observed alone without doses: its observed change, already read
                    changes.append(self._single(adata, state, gene).change)
                    continue
                shift = self._effect(group, context, Perturbation((gene,), (dose,)), ptype)["shift"]
                changes.append(self._decode(state["z_ctrl_t"], shift) + residual)  # along its dose fit
            cache[dose] = (genes, np.stack(changes) if changes else np.zeros((0, adata.n_vars)))
        return cache[dose]

    def _feature_prior(self, adata: AnnData, state: dict, dose: float | None) -> FeaturePrior | None:
        """The features prior of the group's trained singles (:mod:`biojepa.model._feature_prior`), at ``dose``."""
        cache = state.setdefault("feature_prior", {})
        if dose not in cache:
            table, prior = self.perturbation_features_, None
            genes, changes = self._observed_peers(adata, state, dose)
            if table is not None and genes:
                rows, known = table.lookup(genes)
                prior = feature_prior(rows[known], changes[known])
                if prior is not None:
                    logger.info(
                        "Features prior of untrained perturbations in group %s at dose %s: weight %.3f, kernel "
                        "temperature %g (chosen leaving each of %d trained singles out).",
                        state["group"].values, dose, prior.weight, prior.temperature, int(known.sum()),
                    )  # fmt: skip
            cache[dose] = prior
        return cache[dose]

    def _observed_peers(self, adata: AnnData, state: dict, dose: float | None) -> tuple[list[str], np.ndarray]:
        """Names and observed changes ``(n, G)`` of the trained singles measured alone in the group at ``dose``.

        Observed only: a change decoded from a learned effect carries what the features taught the token, so its
        resemblance to its neighbours' would be the model's own, not the data's.
        """
        group = state["group"]
        genes = [g for g, _ in self._typical_singles(adata, state, dose)
                 if dose is None or np.isclose(group.single_doses[g], dose).any()]  # fmt: skip
        changes = [self._single(adata, state, g, dose).change for g in genes]
        return genes, np.stack(changes) if changes else np.zeros((0, adata.n_vars))

    def _feature_row(self, gene: str, features: PerturbationFeatures | None) -> np.ndarray | None:
        """Feature row of ``gene``: from ``features`` (a screened library) first, else the model's own table."""
        for table in (features, self.perturbation_features_):
            if table is not None and gene in table:
                return table.lookup([gene])[0][0]
        return None

    def _measures_shared(self, state: dict) -> bool:
        """Whether a trained single was observed in the group of ``state`` (so its shared residual is measured)."""
        if "measures_shared" not in state:
            trained = self._trained_with(state["ptype"])[0]
            lookup = {g: i for i, g in enumerate(self._setup().vocabulary)}
            state["measures_shared"] = any(g in lookup and trained[lookup[g]] for g in state["group"].singles)
        return state["measures_shared"]

    def _anchor(
        self,
        adata: AnnData,
        own: dict,
        gene: str,
        dose: float | None,
        novel: bool,
        every: list[CovariateGroup],
        state,
        combined: bool = False,
        features: PerturbationFeatures | None = None,
        peers: bool = False,
    ) -> np.ndarray | float:
        """What anchoring adds for one member of a perturbation (``combined``: of a combination; module docstring).

        ``features``: feature rows the model's own table lacks (a screened library). ``peers``: a token known from
        its features also gets the features prior (:mod:`biojepa.model._feature_prior`; screening only).
        """
        group = own["group"]
        if gene in group.singles:
            if dose is None:
                return self._denoised_residual(adata, own, gene) if combined else self._residual(adata, own, gene)
            found = (self._denoised_residual if combined else self._dosed_residual)(adata, own, gene, dose)
            if found is not None:
                return found
        # The gene's own part weighed against the group's shared response: measured in the group where it observed
        # trained singles; in a context never seen with perturbations, the other groups' shared responses averaged
        # and both shares chosen by predicting each measured group from the others (their whole residual
        # instead was further from a held-out line; docs/benchmarks.md, "A line given at prediction time").
        if dose is None:  # else the whole residual of the other groups, below
            chosen = self._context_transfer()  # (kappa, beta) chosen on held-out pairs; None: none were held out
            measured = self._measures_shared(own)
            terms = None if chosen is None else self._transfer_terms(adata, own, gene, every, state, measured)
            if terms is not None:
                (kappa, beta), alpha = chosen, 1.0
                if not measured and (shares := self._unmeasured_shares(own, every, state)) is not None:
                    (alpha, beta), kappa = shares, 0.0  # the learned part, fitted to every measured group: unvalidated
                estimate = alpha * terms["shared"] + kappa * terms["deviation"] + beta * terms["own_part"]
                return estimate - terms["decoded"]
        others = []
        for other in every:
            if gene in other.singles and other.values != group.values:
                try:
                    st = state(other)  # read in its own data: the training data where `adata` is another context's
                    if not _same_type(st["ptype"], own["ptype"]):
                        continue  # e.g. a CRISPRi knockdown's residual says nothing about a CRISPRa activation
                    if dose is None:
                        others.append(self._residual(st["adata"], st, gene))
                    else:
                        found = self._dosed_residual(st["adata"], st, gene, dose)
                        if found is not None:
                            others.append(found)
                except ValueError:  # e.g. a group whose perturbation type is ambiguous: not used
                    continue
        if others:
            return np.mean(others, axis=0)
        if not novel:
            return 0.0
        anchor = self._novel_anchor(adata, own, dose)
        column = self._measured_column(gene)
        if dose is None and column is not None:  # a measured gene: what moves with it across the singles
            if (prior := self._coexpression(adata, own)) is not None:
                anchor = anchor + prior(column)
        elif peers and (row := self._feature_row(gene, features)) is not None:  # what its most similar peers did
            if (prior := self._feature_prior(adata, own, dose)) is not None:
                anchor = anchor + prior(row)
        return anchor

    def _measured_column(self, gene: str) -> int | None:
        """Expression column of a measured gene (measured genes lead the vocabulary); ``None`` if not measured."""
        return _measured_columns(self._setup()).get(gene)

    def _coexpression(self, adata: AnnData, state: dict) -> CoexpressionPrior | None:
        """The expression prior of the group's measured trained singles (:mod:`biojepa.model._coexpression`).

        ``None`` where fewer than three measured trained singles were observed alone in the group.
        """
        if "coexpression" not in state:
            parts = [(g, self._measured_column(g)) for g, _ in self._typical_singles(adata, state, None)]
            parts = [(g, c) for g, c in parts if c is not None]
            prior = None
            if len(parts) >= 3:
                singles = [self._single(adata, state, g) for g, _ in parts]
                changes = np.stack([single.change for single in singles])
                variances = np.stack([single.variance for single in singles])
                columns = np.array([c for _, c in parts])
                weights = prior_weights(changes, columns, variances)
                prior = CoexpressionPrior(changes, columns, variances, *weights)
                logger.info(
                    "Expression prior of never-perturbed genes in group %s: own-level weight %.3f, co-variation "
                    "weight %.3f (chosen leaving each of %d trained singles out).",
                    state["group"].values,
                    prior.own_weight,
                    prior.slope_weight,
                    len(parts),
                )
            state["coexpression"] = prior
        return state["coexpression"]

    def _anchored_observed(self, group: CovariateGroup, perturbation: Perturbation, dosed: bool) -> bool:
        """Whether anchoring returns the observed change: a single observed in the group, without doses."""
        return not dosed and len(perturbation.genes) == 1 and perturbation.genes[0] in group.singles
