"""The one composition of perturbation effects, used by training and prediction, and its interaction's strength."""

from __future__ import annotations

import functools
import logging

import numpy as np
import torch
from anndata import AnnData

from .._constants import EXTRA_KEYS
from ..nn import FEATURES_ONLY
from ..perturbation import CovariateGroup, Perturbation, PerturbationFeatures, interaction_scale
from ._anchoring import AnchoringMixin
from ._reference import ReferenceMixin

logger = logging.getLogger(__name__)


@functools.lru_cache(maxsize=8)
def _trained_vocabulary(setup) -> np.ndarray:
    """Whether each vocabulary entry of a (frozen, hashable) setup is trained by the perturbation loss."""
    return setup.trained_vocabulary()


#: Values of ``pred.obs["source"]``.
OBSERVED, PREDICTED = "observed", "predicted"


class CompositionMixin(AnchoringMixin, ReferenceMixin):
    r"""Latent shift of a perturbation in a covariate group and its decoded expression change.

    The composition is the module's, in training and prediction alike: predicted latent = control latent +
    :math:`\sum_g` learned per-gene effect + :math:`\lambda` learned interaction, with :math:`\lambda` chosen after
    training on combinations held out from the perturbation loss (:meth:`_after_training`). The effect of a token
    the perturbation loss never trained (a gene never perturbed, a compound known from its features) is shrunk
    towards the mean learned effect of the trained singles: :math:`\bar e + \alpha (e - \bar e)`, with
    :math:`\alpha` (``novelty_scale``) chosen the same way on held-out singles.
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

        def featured(name: str) -> bool:  # a row of zeros carries no features
            for t in (features, self.perturbation_features_):
                if t is not None and name in t and bool(np.abs(t.lookup([name])[0]).sum() > 0):
                    return True
            return False

        missing = [g for g in perturbation.genes if g not in lookup and not featured(g)]
        if missing:
            hint = "" if table is None else " nor given a non-zero row of `perturbation_features`"
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
        dose = self._dose_tensor(perturbation)
        eff = self.module.perturbation_effect(idx, context, dose, ptype, features)
        trained = self._trained_with(ptype)[0]
        novel = [k for k, i in enumerate(idx[0].tolist()) if i < 0 or not trained[i]]
        alpha = float(self.module.novelty_scale)
        if novel and alpha != 1.0:  # a token never trained: the trained mean plus a validated share of its own
            effects = eff["effects"].clone()
            for k in novel:
                mean = self._mean_effect(context, None if dose is None else float(dose[0, k]), ptype)
                effects[:, k] = mean + alpha * (effects[:, k] - mean)
            eff = {**eff, "effects": effects}
        scale = self.module.interaction_scale
        return {**eff, "shift": eff["effects"].sum(1) + scale * eff["interaction"]}

    @torch.inference_mode()
    def _decode(self, z_ctrl: torch.Tensor, shift: torch.Tensor) -> np.ndarray:
        """Change of mean log expression when the control latents move by ``shift`` (expression head)."""
        head, std = self.module.expression_head, self.module.gene_std.double()
        return ((head(z_ctrl + shift).mean(0) - head(z_ctrl).mean(0)).double() * std).cpu().numpy()

    def _state(self, adata: AnnData, group: CovariateGroup, perturbation_type, n_control_cells: int, seed: int) -> dict:
        """A group's control profile, context vector and perturbation-type code, and the data its rows index."""
        prof = self._profile(adata, group, n_control_cells, seed)
        z0 = torch.as_tensor(prof["z0"][None], device=self.device)
        with torch.inference_mode():
            context = self.module.perturbation_context(z0, **self._group_tensors(adata, group))
        ptype = self._type_code(group, perturbation_type)
        z_ctrl = torch.as_tensor(prof["z_ctrl"], device=self.device)
        return {
            **prof,
            "group": group,
            "context": context,
            "ptype": ptype,
            "z_ctrl_t": z_ctrl,
            "residuals": {},
            "adata": adata,
        }

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
        features: PerturbationFeatures | None = None,
        peers: bool = False,
    ) -> list[dict]:
        """Per (group, perturbation): the latent shift, the change of mean log expression and its source.

        ``anchor``: each member contributes, besides its decoded learned effect, the residual of that decoding
        against an observed change (:mod:`biojepa.model._anchoring`): a seen single returns its observed change, a
        combination of seen singles starts from the additive combination of their denoised observed changes plus
        what the model adds (the interaction and the decoder's non-additivity), a dose gets the single's residual
        fitted along the learned dose-response (between measured doses, blended with their log-dose interpolation
        by a weight chosen on left-out doses), and an untrained token gets the residual its trained peers share.
        ``every``: the covariate groups whose observed changes anchor members not observed in their own group;
        with an ``adata`` other than the training data, the training groups of the other contexts join them (so a
        context given only at prediction time starts from what the trained contexts observed).
        ``observed``: a perturbation observed in the group returns its observed mean change. ``features``: rows
        for members the model's own feature table lacks (a screened library). ``peers``: tokens known from their
        features also get the features prior of their most similar trained singles (screening).
        """
        if isinstance(n_control_cells, bool) or not isinstance(n_control_cells, int) or n_control_cells < 1:
            raise ValueError(f"`n_control_cells` must be a positive integer, got {n_control_cells!r}.")
        self.module.eval()
        dosed = self.module.condition_dose is not None
        lookup = {g: i for i, g in enumerate(self._setup().vocabulary)}
        states: dict[tuple, dict] = {}
        elsewhere: set[tuple] = set()  # groups of the training data, read there, beside those of a given `adata`
        if every is not None and adata is not self.adata:
            given = {g.values for g in every}
            other = [g for g in self._reference(None, None)[2] if g.values not in given]
            every, elsewhere = [*every, *other], {g.values for g in other}

        def state(group):
            if group.values not in states:
                data = self.adata if group.values in elsewhere else adata
                states[group.values] = self._state(data, group, perturbation_type, n_control_cells, seed)
            return states[group.values]

        out = []
        for group in groups:
            own = state(group)
            trained = self._trained_with(own["ptype"])[0]
            for p in perturbations:
                shift = own["context"].new_zeros(1, self.module.n_latent)
                d_log, source = np.zeros(adata.n_vars), PREDICTED
                if p.genes:
                    shift = self._effect(group, own["context"], p, own["ptype"], features)["shift"]
                    d_log = self._decode(own["z_ctrl_t"], shift)
                    for gene in p.genes if anchor else ():
                        dose = (p.dose_of(gene) if p.doses is not None else 1.0) if dosed else None
                        novel = gene not in lookup or not trained[lookup[gene]]
                        combined = len(p.genes) > 1
                        d_log = d_log + self._anchor(
                            adata, own, gene, dose, novel, every or [], state, combined, features, peers
                        )
                    if anchor and self._anchored_observed(group, p, dosed):
                        source = OBSERVED  # decoded effect and its residual: the observed change
                    if observed and p.genes in group.observed:
                        change = self._mean_log_expression(adata, group.observed[p.genes]) - own["log_ctrl_mean"]
                        d_log, source = change, OBSERVED
                prof = {k: own[k] for k in ("z_ctrl", "z0", "log_ctrl_mean")}
                out.append(
                    {"group": group, "perturbation": p, "shift": shift, "d_log": d_log, "source": source, **prof}
                )
        return out

    # ------------------------------------------------------------------ strengths chosen on held-out labels
    def _after_training(self) -> None:
        """Choose the interaction's strength, the novelty scale and the cross-group transfer on held-out cells."""
        if getattr(self, "perturbation_setup_", None) is None:
            return
        held = self._holdout_shifts()
        combos = [h for h in held if h["n_genes"] > 1]
        width = self.module.n_latent
        residuals = np.array([h["residual"] for h in combos]).reshape(len(combos), width)
        interactions = np.array([h["interaction"] for h in combos]).reshape(len(combos), width)
        scale = interaction_scale(residuals, interactions)
        self.module.interaction_scale.fill_(scale)
        if combos:
            logger.info("Interaction strength %.3f chosen on %d held-out combinations.", scale, len(combos))
        else:
            logger.info(
                "Too few training combinations to hold some out and choose the interaction's strength: it stays %.3f "
                "(predicted combinations compose their members' learned effects).",
                scale,
            )
        singles = [h for h in held if h["n_genes"] == 1]
        if singles:
            observed = np.array([h["observed"] - h["mean_effect"] for h in singles])
            own = np.array([h["effect"] - h["mean_effect"] for h in singles])
            novelty = interaction_scale(observed, own, max_scale=1.0)
            self.module.novelty_scale.fill_(novelty)
            logger.info(
                "Novelty scale %.3f chosen on %d held-out singles (a token never trained predicts the mean effect "
                "of the trained ones plus this fraction of its own deviation).",
                novelty,
                len(singles),
            )
        self._choose_context_transfer()

    def _trained_with(self, ptype) -> tuple[np.ndarray, np.ndarray]:
        """Vocabulary trained with perturbation type ``ptype``: ``(trained, singles)``.

        ``trained`` flags the entries perturbed in a training label with cells of that type, ``singles`` indexes
        those whose single label trains with it. A token trained only under another type (a gene knocked down by
        CRISPRi, asked for as a CRISPRa activation) carries no evidence for this one: it counts as never trained,
        and the mean effect it is shrunk to is that of the same type's singles. Without perturbation types (or a
        type with no trained singles), every trained entry and every trained single.
        """
        setup = self._setup()
        code = None if ptype is None else int(torch.as_tensor(ptype).reshape(-1)[0])
        cache = self.__dict__.setdefault("_trained_with_cache", {})
        key = (setup, code)
        if key not in cache:
            every = (_trained_vocabulary(setup), setup.trained_singles())
            registry = self.adata_manager.data_registry
            if code is None or EXTRA_KEYS.PERTURBATION_TYPE not in registry:
                cache[key] = every
            else:
                codes = np.asarray(self.get_from_registry(self.adata, EXTRA_KEYS.PERTURBATION)).ravel()
                types = np.asarray(self.get_from_registry(self.adata, EXTRA_KEYS.PERTURBATION_TYPE)).ravel()
                held = set(setup.holdout)
                trained, singles = np.zeros(len(setup.vocabulary), dtype=bool), set()
                for label_code in np.unique(codes[types == code]):
                    genes = setup.parse(setup.labels[int(label_code)]).genes
                    if not genes or setup.delimiter.join(genes) in held:
                        continue
                    index = setup.index(genes)
                    trained[index] = True
                    if len(genes) == 1:
                        singles.add(index[0])
                cache[key] = (trained, np.array(sorted(singles), dtype=np.int64)) if singles else every
        return cache[key]

    @torch.inference_mode()
    def _mean_effect(self, context: torch.Tensor, dose: float | None, ptype) -> torch.Tensor:
        """``(n_latent,)`` mean learned effect of the trained singles (of type ``ptype``) in ``context`` at ``dose``."""
        genes = torch.as_tensor(self._trained_with(ptype)[1], device=self.device)[:, None]
        n = genes.shape[0]
        doses = None
        if self.module.condition_dose is not None:
            doses = torch.full((n, 1), 1.0 if dose is None else float(dose), device=self.device)
        types = None if ptype is None else ptype.expand(n)
        eff = self.module.perturbation_effect(genes, context.expand(n, -1), doses, types)
        return eff["effects"][:, 0].mean(0)

    @torch.inference_mode()
    def _holdout_shifts(self) -> list[dict]:
        """Per held-out label, group and dose: observed latent shift, learned effects, interaction, mean effect."""
        setup = self._setup()
        if not setup.holdout_mask().any():
            return []
        self.module.eval()
        codes = np.asarray(self.get_from_registry(self.adata, EXTRA_KEYS.PERTURBATION)).ravel()
        registry = self.adata_manager.data_registry
        dose_codes = type_codes = None
        if EXTRA_KEYS.DOSE in registry:
            dose_codes = np.asarray(self.get_from_registry(self.adata, EXTRA_KEYS.DOSE)).ravel()
        if EXTRA_KEYS.PERTURBATION_TYPE in registry:
            type_codes = np.asarray(self.get_from_registry(self.adata, EXTRA_KEYS.PERTURBATION_TYPE)).ravel()
        adata, groups, _ = self._reference(None, None)
        held = set(setup.holdout)
        out = []
        for group in groups:
            z0 = torch.as_tensor(self._target_latent(adata, group.control).mean(0)[None], device=self.device)
            context = self.module.perturbation_context(z0, **self._group_tensors(adata, group))
            for genes, rows in group.observed.items():
                if setup.delimiter.join(genes) not in held:
                    continue
                parts = (
                    [rows] if dose_codes is None else [rows[dose_codes[rows] == c] for c in np.unique(dose_codes[rows])]
                )
                for part in parts:
                    code = torch.as_tensor(codes[part[:1]], device=self.device)
                    dcode = None if dose_codes is None else torch.as_tensor(dose_codes[part[:1]], device=self.device)
                    idx, dose = self.module.lookup_condition(code, dcode)
                    ptype = None if type_codes is None else torch.as_tensor(type_codes[part[:1]], device=self.device)
                    eff = self.module.perturbation_effect(idx, context, dose, ptype)
                    obs = torch.as_tensor(self._target_latent(adata, part).mean(0)[None], device=self.device) - z0
                    item = {
                        "n_genes": len(genes),
                        "residual": (obs - eff["effects"].sum(1)).cpu().numpy()[0],
                        "interaction": eff["interaction"].cpu().numpy()[0],
                    }
                    if len(genes) == 1:
                        value = None if dose is None else float(dose[0, 0])
                        item |= {
                            "observed": obs.cpu().numpy()[0],
                            "effect": eff["effects"][0, 0].cpu().numpy(),
                            "mean_effect": self._mean_effect(context, value, ptype).cpu().numpy(),
                        }
                    out.append(item)
        return out
