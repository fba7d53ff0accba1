r"""How much of the flow's per-cell spread to keep around the predicted mean, chosen on out-of-bag populations.

Generated perturbed cells, and cells at later times, are centred on the point prediction
(:meth:`~biojepa.BioJEPA.sample_perturbation`, :meth:`~biojepa.BioJEPA.sample_trajectory`); what the flow adds is
how each cell departs from that mean. Whether that departure makes the cells more like real ones is measured, not
assumed: ensemble members after the first train on a bootstrap resample of the population pairs, so each leaves some
pairs out. For each such out-of-bag pair, the source cells (control cells, or the cells of the earlier time) are
moved by the observed mean change plus :math:`\lambda` times their own departure from the member's mean change, and
the energy distance (:func:`~biojepa.metrics.energy_distance`) to the observed target cells is computed on log
expression for :math:`\lambda \in \{0, 0.25, 0.5, 0.75, 1\}`. The :math:`\lambda` of the smallest total distance
becomes the ``spread`` of sampled cells: 0 gives every cell the same change (source cells shifted by the
prediction), 1 the flow's spread whole.

Out-of-bag pairs lie inside the training time span, and there the flow is conditioned on changes it trained on.
Cells at later times are an extrapolation: :meth:`~biojepa.BioJEPA.backtest_trajectory`, called after
:meth:`~biojepa.BioJEPA.train_generative`, also trains flows for its copy of the model (the copy trained without
each population's latest time), samples the held-back times with :meth:`~biojepa.BioJEPA.sample_trajectory` at each
share and keeps the share whose cells are closest (energy distance on log expression) to the held-back cells as
``trajectory_spread``, which :meth:`~biojepa.BioJEPA.sample_trajectory` uses from then on.
"""

from __future__ import annotations

import logging

import numpy as np
import torch

from ..data import normalize_expression
from ..metrics import energy_distance
from ..nn import integrate

logger = logging.getLogger(__name__)

#: Shares of the flow's per-cell departure tried.
SPREADS = (0.0, 0.25, 0.5, 0.75, 1.0)
#: Cells per population and out-of-bag pairs at most in the choice (it costs pairwise distances).
_CELLS, _PAIRS = 200, 100


class SpreadMixin:
    """``_choose_spread``: the share of the flow's per-cell departure kept by sampled cells (module docstring)."""

    @torch.inference_mode()
    def _choose_spread(self, pairs: list[dict], fields, members: list[np.ndarray], seed: int) -> float:
        """The share chosen on the population pairs each member ``m >= 1`` left out (``members[m]``: its pairs).

        Perturbation and time pairs alike; 1 (the flow's spread whole) where no pair was left out.
        """
        rng = np.random.default_rng([seed, 7])
        held = [
            (m, i) for m in range(1, len(fields)) for i in sorted(set(range(len(pairs))) - set(members[m].tolist()))
        ]
        if not held:
            return 1.0
        if len(held) > _PAIRS:
            held = [held[k] for k in np.sort(rng.choice(len(held), _PAIRS, replace=False))]
        totals = np.zeros(len(SPREADS))
        for m, i in held:
            pair = pairs[i]
            src = rng.permutation(len(pair["source_rows"]))[:_CELLS]
            tgt = rng.permutation(len(pair["target_rows"]))[:_CELLS]
            z0 = torch.as_tensor(pair["source"][src], device=self.device)
            condition = torch.as_tensor(pair["condition"], device=self.device).expand(len(src), -1)
            departure = self._head_change(z0, integrate(fields[m], z0, condition, 10))
            departure -= departure.mean(0)
            source = self._log_expression(self.adata, pair["source_rows"][src])
            target = self._log_expression(self.adata, pair["target_rows"][tgt])
            moved = source + (target.mean(0) - source.mean(0))
            for k, share in enumerate(SPREADS):
                totals[k] += energy_distance(moved + share * departure, target)
        spread = float(SPREADS[int(np.argmin(totals))])
        logger.info(
            "Generative head: sampled cells keep %.2f of the flow's per-cell spread (chosen on %d out-of-bag "
            "populations; energy distance %s for shares %s).",
            spread,
            len(held),
            np.round(totals / len(held), 4).tolist(),
            list(SPREADS),
        )
        return spread

    @torch.inference_mode()
    def _backtest_spread(self, adata, context: np.ndarray, held: np.ndarray, time_key: str, seed: int) -> np.ndarray:
        """Energy distance of sampled to held-back cells for each share in ``SPREADS`` (this model: the backtest copy).

        Per covariate group, the cells of every held-back time are sampled from the group's ``context`` rows of
        ``adata`` (up to 200 cells, the same draws for every share) and compared on log expression with up to 200 of
        the held-back cells; the distances are averaged over groups and times. Sets this model's own
        ``generative_config_["spread"]`` to each share in turn (the copy's; it is discarded afterwards).
        """
        rng = np.random.default_rng([seed, 11])
        t = adata.obs[time_key].to_numpy(dtype=np.float64)
        totals, n = np.zeros(len(SPREADS)), 0
        for rows in self._time_groups(adata).values():
            target_rows = rows[held[rows]]
            if target_rows.size == 0:
                continue
            times = np.unique(t[target_rows])
            observed = [rng.permutation(target_rows[t[target_rows] == tt])[:_CELLS] for tt in times]
            observed = [self._log_expression(self._encodable(adata, at), np.arange(len(at))) for at in observed]
            for k, share in enumerate(SPREADS):
                self.generative_config_["spread"] = float(share)
                cells = self.sample_trajectory(times, _CELLS, adata=adata, indices=rows[context[rows]], seed=seed)
                generated = normalize_expression(cells.X, self.input_scale)  # counts: each cell's own library
                at = cells.obs[time_key].to_numpy(dtype=np.float64)
                for q, tt in enumerate(times):
                    totals[k] += energy_distance(generated[np.isclose(at, tt)], observed[q])
            n += len(times)
        return totals / max(n, 1)
