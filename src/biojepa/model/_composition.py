"""The one composition of perturbation effects, used by training and prediction, and its interaction's strength."""

from __future__ import annotations

import logging

import numpy as np
import torch
from anndata import AnnData

from .._constants import EXTRA_KEYS
from ..nn import FEATURES_ONLY
from ..perturbation import CovariateGroup, Perturbation, PerturbationFeatures, interaction_scale
from ._reference import ReferenceMixin

logger = logging.getLogger(__name__)

#: Values of ``pred.obs["source"]``.
OBSERVED, PREDICTED = "observed", "predicted"


class CompositionMixin(ReferenceMixin):
    r"""Latent shift of a perturbation in a covariate group and its decoded expression change.

    The composition is the module's, in training and prediction alike: predicted latent = control latent +
    :math:`\sum_g` learned per-gene effect + :math:`\lambda` learned interaction, with :math:`\lambda` chosen after
    training on combinations held out from the perturbation loss (:meth:`_after_training`).
    """

    def _token_inputs(
        self, perturbation: Perturbation, features: PerturbationFeatures | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Vocabulary indices ``(1, K)`` of a perturbation's members and their feature rows (``None`` without).

        A member outside the vocabulary but with a row in ``features`` (else the model's own table) is
        ``FEATURES_ONLY``: predicted from its features alone.
        """
        setup = self._setup()
        table = features or self.perturbation_features_
        lookup = {g: i for i, g in enumerate(setup.vocabulary)}
        missing = [g for g in perturbation.genes if g not in lookup and (table is None or g not in table)]
        if missing:
            hint = "" if table is None else " nor in `perturbation_features`"
            raise ValueError(
                f"Perturbations {missing} are neither measured (in var_names) nor perturbed in the training data"
                f"{hint}, so the model has no token and no prior for them; predict measured or training-perturbed "
                "genes, or give features for them (`perturbation_features=`)."
            )
        idx = [lookup.get(g, FEATURES_ONLY) for g in perturbation.genes]
        rows = None
        if table is not None:
            rows, known = table.lookup(perturbation.genes)
            if features is not None and self.perturbation_features_ is not None:  # model's rows where absent
                own, own_known = self.perturbation_features_.lookup(perturbation.genes)
                rows = np.where((~known & own_known)[:, None], own, rows)
            rows = torch.as_tensor(rows[None], device=self.device)
        return torch.tensor([idx], device=self.device), rows

    @torch.inference_mode()
    def _effect(
        self, group: CovariateGroup, context, perturbation: Perturbation, ptype, features=None
    ) -> dict[str, torch.Tensor]:
        """Per-gene effects ``(1, K, n_latent)``, interaction and shift ``(1, n_latent)`` of one perturbation."""
        idx, features = self._token_inputs(perturbation, features)
        eff = self.module.perturbation_effect(idx, context, self._dose_tensor(perturbation), ptype, features)
        scale = self.module.interaction_scale
        return {**eff, "shift": eff["effects"].sum(1) + scale * eff["interaction"]}

    @torch.inference_mode()
    def _decode(self, z_ctrl: torch.Tensor, shift: torch.Tensor) -> np.ndarray:
        """Change of mean log expression when the control latents move by ``shift`` (expression head)."""
        head, std = self.module.expression_head, self.module.gene_std.double()
        return ((head(z_ctrl + shift).mean(0) - head(z_ctrl).mean(0)).double() * std).cpu().numpy()

    def _state(self, adata: AnnData, group: CovariateGroup, perturbation_type, n_control_cells: int, seed: int) -> dict:
        """A group's control profile, context vector and perturbation-type code."""
        prof = self._profile(adata, group, n_control_cells, seed)
        z0 = torch.as_tensor(prof["z0"][None], device=self.device)
        with torch.inference_mode():
            context = self.module.perturbation_context(z0, **self._group_tensors(adata, group))
        ptype = self._type_code(group, perturbation_type)
        z_ctrl = torch.as_tensor(prof["z_ctrl"], device=self.device)
        return {**prof, "group": group, "context": context, "ptype": ptype, "z_ctrl_t": z_ctrl, "residuals": {}}

    def _residual(self, adata: AnnData, state: dict, gene: str) -> np.ndarray:
        """Observed change of a single minus the decoding of its learned effect, in the group of ``state``."""
        if gene not in state["residuals"]:
            group = state["group"]
            single = self._effect(group, state["context"], Perturbation((gene,)), state["ptype"])["shift"]
            observed = self._mean_log_expression(adata, group.singles[gene]) - state["log_ctrl_mean"]
            state["residuals"][gene] = observed - self._decode(state["z_ctrl_t"], single)
        return state["residuals"][gene]

    def _compose(
        self,
        adata: AnnData,
        groups: list[CovariateGroup],
        perturbations: list[Perturbation],
        perturbation_type: str | None,
        n_control_cells: int,
        seed: int,
        anchor: bool = True,
        observed: bool = False,
        every: list[CovariateGroup] | None = None,
    ) -> list[dict]:
        """Per (group, perturbation): the latent shift, the change of mean log expression and its source.

        ``anchor``: a gene observed alone (without a registered dose) contributes, besides its decoded learned
        effect, the residual of that decoding against its observed change: in the group itself when observed there
        (so a seen single returns its observed change and a combination of seen singles starts from the additive
        combination of observed changes, plus what the model adds: the interaction and the decoder's
        non-additivity), else the mean residual over the groups of ``every`` where it was observed alone.
        ``observed``: a perturbation observed in the group returns its observed mean change.
        """
        if isinstance(n_control_cells, bool) or not isinstance(n_control_cells, int) or n_control_cells < 1:
            raise ValueError(f"`n_control_cells` must be a positive integer, got {n_control_cells!r}.")
        self.module.eval()
        anchor = anchor and self.module.condition_dose is None
        states: dict[tuple, dict] = {}

        def state(group):
            if group.values not in states:
                states[group.values] = self._state(adata, group, perturbation_type, n_control_cells, seed)
            return states[group.values]

        out = []
        for group in groups:
            own = state(group)
            for p in perturbations:
                shift = own["context"].new_zeros(1, self.module.n_latent)
                d_log, source = np.zeros(adata.n_vars), PREDICTED
                if p.genes:
                    shift = self._effect(group, own["context"], p, own["ptype"])["shift"]
                    d_log = self._decode(own["z_ctrl_t"], shift)
                    for gene in p.genes if anchor else ():
                        d_log = d_log + self._anchor(adata, own, gene, every or [], state)
                    if anchor and len(p.genes) == 1 and p.genes[0] in group.singles:
                        source = OBSERVED  # decoded effect and its residual: the observed change
                    if observed and p.genes in group.observed:
                        change = self._mean_log_expression(adata, group.observed[p.genes]) - own["log_ctrl_mean"]
                        d_log, source = change, OBSERVED
                prof = {k: own[k] for k in ("z_ctrl", "z0", "log_ctrl_mean")}
                out.append(
                    {"group": group, "perturbation": p, "shift": shift, "d_log": d_log, "source": source, **prof}
                )
        return out

    def _anchor(self, adata: AnnData, own: dict, gene: str, every: list[CovariateGroup], state) -> np.ndarray | float:
        """Residual of ``gene`` in its own group, else its mean residual over the other groups that observed it."""
        if gene in own["group"].singles:
            return self._residual(adata, own, gene)
        others = []
        for group in every:
            if gene in group.singles and group.values != own["group"].values:
                try:
                    others.append(self._residual(adata, state(group), gene))
                except ValueError:  # e.g. a group whose perturbation type is ambiguous: not used
                    continue
        return np.mean(others, axis=0) if others else 0.0

    # ------------------------------------------------------------------ interaction strength
    def _after_training(self) -> None:
        """Choose the interaction's strength on the combinations held out from the perturbation loss."""
        if getattr(self, "perturbation_setup_", None) is None:
            return
        residuals, interactions = self._holdout_interactions()
        scale = interaction_scale(residuals, interactions)
        self.module.interaction_scale.fill_(scale)
        if len(residuals):
            logger.info("Interaction strength %.3f chosen on %d held-out combinations.", scale, len(residuals))
        else:
            logger.info(
                "Too few training combinations to hold some out and choose the interaction's strength: it stays %.3f "
                "(predicted combinations compose their members' learned effects).",
                scale,
            )

    @torch.inference_mode()
    def _holdout_interactions(self) -> tuple[np.ndarray, np.ndarray]:
        """Per held-out combination and group: observed latent shift minus the learned effects, and the interaction."""
        setup = self._setup()
        held = setup.holdout_mask()
        empty = np.zeros((0, self.module.n_latent))
        if not held.any():
            return empty, empty
        self.module.eval()
        codes = np.asarray(self.get_from_registry(self.adata, EXTRA_KEYS.PERTURBATION)).ravel()
        registry = self.adata_manager.data_registry
        dose_codes = type_codes = None
        if EXTRA_KEYS.DOSE in registry:
            dose_codes = np.asarray(self.get_from_registry(self.adata, EXTRA_KEYS.DOSE)).ravel()
        if EXTRA_KEYS.PERTURBATION_TYPE in registry:
            type_codes = np.asarray(self.get_from_registry(self.adata, EXTRA_KEYS.PERTURBATION_TYPE)).ravel()
        adata, groups, _ = self._reference(None, None)
        residuals, interactions = [], []
        for group in groups:
            z0 = torch.as_tensor(self._target_latent(adata, group.control).mean(0)[None], device=self.device)
            context = self.module.perturbation_context(z0, **self._group_tensors(adata, group))
            for genes, rows in group.observed.items():
                if setup.delimiter.join(genes) not in setup.holdout:
                    continue
                code = torch.as_tensor(codes[rows[:1]], device=self.device)
                dcode = None if dose_codes is None else torch.as_tensor(dose_codes[rows[:1]], device=self.device)
                idx, dose = self.module.lookup_condition(code, dcode)
                ptype = None if type_codes is None else torch.as_tensor(type_codes[rows[:1]], device=self.device)
                eff = self.module.perturbation_effect(idx, context, dose, ptype)
                obs_shift = torch.as_tensor(self._target_latent(adata, rows).mean(0)[None], device=self.device) - z0
                residuals.append((obs_shift - eff["effects"].sum(1)).cpu().numpy()[0])
                interactions.append(eff["interaction"].cpu().numpy()[0])
        if not residuals:
            return empty, empty
        return np.array(residuals), np.array(interactions)
