r"""How far a single's effect carries to a covariate group that did not observe it, chosen on held-out pairs.

A gene knocked out in two cell lines and asked for in a third: what the third line's perturbations share is
measured there (the mean observed change :math:`m_G` of the singles it observed), and two things speak for the gene's
own part, its learned effect's deviation from the mean learned effect, decoded in the line
(:math:`D_{g,G} = \text{decode}(e_g) - \text{decode}(\bar e)`), and its own observed part in the other lines
(:math:`O_g`, its decoding residual there minus the residual that line's singles share). The prediction is

.. math:: \hat\Delta_{g,G} = m_G + \kappa\, D_{g,G} + \beta\, O_g,

with :math:`\kappa, \beta \in [0, 1]` fitted by least squares on (single, group) pairs held out from the
perturbation loss in that group only (:func:`~biojepa.perturbation.validation_pairs`): for those, the learned
effect in the group was never fitted to the group's cells, as for the pairs a user asks for. Where knockouts
act alike in every line, :math:`\kappa` or :math:`\beta` near 1 keeps what the gene does; where what a gene does
beyond its line's shared response does not carry over, both near 0 give the line's mean change.

A group that measured no shared response of its own (a cell line given only as control cells at prediction time,
or one with control cells alone in training) has no :math:`m_G`. It is predicted as
:math:`\alpha\, \bar m + \beta\, O_g`, with :math:`\bar m` the other groups' :math:`m_G` averaged; the learned
part is left out (it was fitted to every measured group, so no group can validate it), and :math:`\alpha, \beta
\in [0, 1]` are chosen by predicting each measured group's singles from the other groups the same way (bounded least
squares): where what one line's knockouts share does not carry to another, :math:`\alpha` near 0 predicts little
change.
"""

from __future__ import annotations

import logging

import numpy as np
import torch
from scipy.optimize import lsq_linear

from ..perturbation import CovariateGroup, Perturbation, validation_pairs

logger = logging.getLogger(__name__)

#: What a group's prediction state holds of its encoded control cells (see ``CompositionMixin._state``).
_ENCODED = ("z_ctrl", "z0", "log_ctrl_mean", "context", "ptype", "z_ctrl_t")


def _same_type(a, b) -> bool:
    """Whether two perturbation-type codes (tensors or ``None``) agree."""
    if a is None or b is None:
        return a is None and b is None
    return bool((a == b).all())


class ContextTransferMixin:
    """Held-out (single, group) pairs and the transfer shares chosen on them (see the module docstring)."""

    def _group_code(self, values: tuple, sizes: list[int] | None = None) -> int | None:
        """Covariate-group code (the module's mixed radix) of covariate values; ``None`` for an unseen category."""
        setup, known = self._setup(), self._categories()
        args = self.adata_manager.registry["setup_args"]
        codes = dict(zip(setup.covariate_keys, values, strict=True))
        if any(codes[k] not in known[k] for k in codes):
            return None
        digits = [known[args["batch_key"]].index(codes[args["batch_key"]]) if args.get("batch_key") else 0]
        digits += [known[k].index(codes[k]) for k in args.get("categorical_covariate_keys") or []]
        if sizes is None:
            sizes = [len(known[args["batch_key"]]) if args.get("batch_key") else 1]
            sizes += [len(known[k]) for k in args.get("categorical_covariate_keys") or []]
        code = 0
        for digit, size in zip(digits, sizes, strict=True):
            code = code * max(size, 1) + digit
        return code

    def _held_out_pairs(self, setup) -> np.ndarray:
        """``(n, 2)`` (label code, group code) of the singles held out in one group (none with doses).

        Only undosed models: the transfer these pairs choose applies to singles without doses (a dosed single is
        carried along its dose-response instead).
        """
        if setup.doses is not None or not setup.covariate_keys:
            return np.zeros((0, 2), dtype=np.int64)
        held = set(setup.holdout)
        code_of = {}
        for i, label in enumerate(setup.labels):
            genes = setup.parse(label).genes
            if len(genes) == 1 and genes[0] not in held:
                code_of[genes[0]] = i
        _, _, groups = self._reference(None, None)
        observed = []
        for group in groups:
            code = self._group_code(group.values)
            if code is None or len(group.types) > 1:  # a group of mixed types: which type a single has is unclear
                continue
            kind = group.types[0] if group.types else None
            observed += [(code_of[g], code, kind) for g in group.singles if g in code_of]
        pairs = validation_pairs(observed)
        if pairs:
            logger.info("%d (single, covariate group) pairs held out to choose the cross-group transfer.", len(pairs))
        return np.array(pairs, dtype=np.int64).reshape(-1, 2)

    def _context_transfer(self) -> tuple[float, float] | None:
        """The chosen ``(kappa, beta)``; ``None`` where no pair was held out (or a model saved before them)."""
        value = self.module.context_transfer if self.module.perturbation is not None else None
        if value is None or bool(torch.isnan(value).any()):
            return None
        return float(value[0]), float(value[1])

    def _learned_part(self, state: dict, gene: str) -> tuple[np.ndarray, np.ndarray]:
        """``(decode(e_gene), decode(e_gene) - decode(mean effect))`` in the group of ``state``."""
        cache = state.setdefault("learned_part", {})
        if gene not in cache:
            group, context, ptype = state["group"], state["context"], state["ptype"]
            shift = self._effect(group, context, Perturbation((gene,)), ptype)["shift"]
            decoded = self._decode(state["z_ctrl_t"], shift)
            mean = self._decode(state["z_ctrl_t"], self._mean_effect(context, None, ptype)[None])
            cache[gene] = decoded, decoded - mean
        return cache[gene]

    def _transfer_terms(
        self, adata, own: dict, gene: str, every: list[CovariateGroup], state, measured: bool = True
    ) -> dict | None:
        """``m_G``, ``D``, ``O`` and ``decode(e_gene)`` of a single in the group of ``own`` (module docstring).

        ``measured``: ``m_G`` is the mean change of the singles the group observed; else (a group that measured no
        shared response of its own, e.g. a cell line given only at prediction time) the other groups' ``m_G``,
        averaged. ``None`` where that is missing or the gene was observed alone in no other group.
        """
        rest = self._elsewhere(gene, own["group"].values, own["ptype"], every, state)
        if not rest:
            return None
        if measured:
            shared = self._shared_change(adata, own)
        else:
            if "shared_elsewhere" not in own:
                own["shared_elsewhere"] = self._shared_elsewhere(own, every, state)
            shared = own["shared_elsewhere"]
        if shared is None:
            return None
        decoded, deviation = self._learned_part(own, gene)
        return {
            "shared": shared,
            "deviation": deviation,
            "own_part": np.mean([r - t for r, t in rest], axis=0),
            "decoded": decoded,
        }

    def _choose_context_transfer(self) -> None:
        """Fit ``(kappa, beta)`` on the held-out pairs' observed changes (module docstring)."""
        pairs = self.module.pair_holdout if self.module.perturbation is not None else None
        if pairs is None or pairs.numel() == 0:
            return
        setup, n_groups = self._setup(), self.module.n_groups
        keys = set(pairs.cpu().tolist())
        adata, _, groups = self._reference(None, None)
        by_code = {self._group_code(g.values): g for g in groups}
        states: dict = {}

        def state(group):
            if group.values not in states:
                states[group.values] = self._state(adata, group, None, 500, 0)
            return states[group.values]

        targets, terms = [], []
        for key in sorted(keys):
            label, code = divmod(key, n_groups)
            group = by_code.get(code)
            gene = setup.parse(setup.labels[label]).genes[0]
            if group is None or gene not in group.singles:
                continue
            blind = CovariateGroup(group.values, group.control)  # the group as if it had not observed the gene
            blind.singles = {g: r for g, r in group.singles.items() if g != gene}
            blind.observed = {g: r for g, r in group.observed.items() if g != (gene,)}
            blind.combinations, blind.types = group.combinations, group.types
            # the group's encoded controls and context, none of its caches (they read the gene's cells)
            own = {k: state(group)[k] for k in _ENCODED} | {"group": blind, "residuals": {}}
            found = self._transfer_terms(adata, own, gene, groups, state)
            if found is None:
                continue
            observed = self._mean_log_expression(adata, group.singles[gene]) - own["log_ctrl_mean"]
            targets.append(observed - found["shared"])
            terms.append(np.stack([found["deviation"], found["own_part"]], axis=1))
        if not targets:
            return
        shares = _validated_shares(targets, terms)
        self.module.context_transfer.copy_(torch.as_tensor(shares, dtype=self.module.context_transfer.dtype))
        logger.info(
            "Cross-group transfer chosen on %d held-out pairs: %.3f of the learned own effect, %.3f of the own part "
            "observed in other groups.",
            len(targets),
            *shares,
        )

    def _elsewhere(self, gene: str, exclude, ptype, every: list[CovariateGroup], state) -> list:
        """``(residual, shared residual)`` of a gene in each other group of type ``ptype`` observing it alone.

        Every group except the one with covariate values ``exclude``.
        """
        out = []
        for other in every:
            if gene not in other.singles or other.values == exclude:
                continue
            try:
                st = state(other)
                if not _same_type(st["ptype"], ptype):
                    continue  # e.g. a CRISPRi knockdown's residual says nothing about a CRISPRa activation
                out.append((self._residual(st["adata"], st, gene), self._typical_residual(st["adata"], st, None)))
            except ValueError:  # e.g. a group whose perturbation type is ambiguous: not used
                continue
        return out

    def _shared_change(self, adata, state: dict) -> np.ndarray | None:
        """``m_G``: mean observed change of every single the group observed, trained or held out (``None``: none)."""
        if "shared_change" not in state:
            changes = [self._single(adata, state, g).change for g in sorted(state["group"].singles)]
            state["shared_change"] = np.mean(changes, axis=0) if changes else None
        return state["shared_change"]

    def _shared_elsewhere(self, own: dict, every: list[CovariateGroup], state) -> np.ndarray | None:
        """Mean over the other groups of type ``own["ptype"]`` of their singles' mean observed change (``m_G``)."""
        shared = []
        for other in every:
            if not other.singles or other.values == own["group"].values:
                continue
            try:
                st = state(other)
            except ValueError:  # e.g. a group whose perturbation type is ambiguous: not used
                continue
            if _same_type(st["ptype"], own["ptype"]):
                shared.append(self._shared_change(st["adata"], st))
        return np.mean(shared, axis=0) if shared else None

    def _unmeasured_shares(self, own: dict, every: list[CovariateGroup], state) -> tuple[float, float] | None:
        """``(alpha, beta)`` for a group that measured no shared response of its own (module docstring).

        Chosen leaving each group out: every single a measured group observed (and some other group observed too)
        is predicted as ``alpha`` times the other groups' mean shared response plus ``beta`` times its own part
        observed in those groups; bounded least squares in [0, 1] over all of them (``None`` where no single can be
        so predicted).
        """
        if "unmeasured_shares" not in own:
            others = [g for g in every if g.values != own["group"].values]
            targets, terms = [], []
            for group in others:
                if not group.singles:
                    continue
                try:
                    st = state(group)
                except ValueError:  # e.g. a group whose perturbation type is ambiguous: not used
                    continue
                if not _same_type(st["ptype"], own["ptype"]):
                    continue
                shared = self._shared_elsewhere(st, others, state)
                for gene in sorted(group.singles) if shared is not None else ():
                    rest = self._elsewhere(gene, group.values, own["ptype"], others, state)
                    if rest:
                        targets.append(self._single(st["adata"], st, gene).change)
                        terms.append(np.stack([shared, np.mean([r - s for r, s in rest], axis=0)], axis=1))
            shares = None
            if targets:
                fit = lsq_linear(np.concatenate(terms), np.concatenate(targets), bounds=(0.0, 1.0))
                shares = (float(fit.x[0]), float(fit.x[1]))
                logger.info(
                    "Covariate group %s measured no shared response: %.3f of the other groups' and %.3f of each "
                    "gene's own part observed there (chosen on %d singles, leaving each group out).",
                    own["group"].values,
                    *shares,
                    len(targets),
                )
            own["unmeasured_shares"] = shares
        return own["unmeasured_shares"]


def _validated_shares(targets: list[np.ndarray], terms: list[np.ndarray]) -> np.ndarray:
    r"""``(kappa, beta)`` by bounded least squares over the pairs, kept only where they predict a left-out pair.

    Each pair :math:`i` is predicted with the shares fitted on the others; unless those predictions have a smaller
    total squared error than no own part at all (:math:`\kappa = \beta = 0`, the group's mean change), the
    shares are 0: a fit on a few pairs can find a share in noise, and this check keeps it from being trusted.
    ``targets``: per pair, observed change minus the group's mean change; ``terms``: per pair, ``(n_genes, 2)``.
    """
    if len(targets) < 2:
        return np.zeros(2)
    fit = lsq_linear(np.concatenate(terms), np.concatenate(targets), bounds=(0.0, 1.0)).x
    held_error = zero_error = 0.0
    for i in range(len(targets)):
        rest = [j for j in range(len(targets)) if j != i]
        x = np.concatenate([terms[j] for j in rest])
        shares = lsq_linear(x, np.concatenate([targets[j] for j in rest]), bounds=(0.0, 1.0)).x
        held_error += float(((targets[i] - terms[i] @ shares) ** 2).sum())
        zero_error += float((targets[i] ** 2).sum())
    return fit if held_error < zero_error else np.zeros(2)
