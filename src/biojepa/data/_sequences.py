"""Sequences for time courses: paired samples, population coupling by mini-batch optimal transport, query splits."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import ot
import torch


@dataclass
class Sequences:
    """Cells arranged as sequences, each ordered by time.

    Parameters
    ----------
    cells
        ``(N,)`` index of each token's cell (a cell may appear in several population chains).
    lengths
        ``(S,)`` number of time points of each sequence (``lengths.sum() == N``).

    Examples
    --------
    >>> import torch
    >>> from biojepa.data import Sequences
    >>> seq = Sequences(torch.tensor([4, 0, 2, 1, 3]), torch.tensor([2, 3]))
    >>> seq.sequence_of_token().tolist(), seq.first_token().tolist()
    ([0, 0, 1, 1, 1], [0, 2])
    """

    cells: torch.Tensor
    lengths: torch.Tensor

    def sequence_of_token(self) -> torch.Tensor:
        """``(N,)`` sequence index of each token."""
        return torch.repeat_interleave(torch.arange(len(self.lengths), device=self.lengths.device), self.lengths)

    def first_token(self) -> torch.Tensor:
        """``(S,)`` position in ``cells`` of each sequence's first token."""
        return torch.cumsum(self.lengths, 0) - self.lengths


def time_scale(times: np.ndarray) -> float:
    """Typical time step: the median gap between consecutive distinct time points (1 with a single time point).

    Examples
    --------
    >>> import numpy as np
    >>> from biojepa.data import time_scale
    >>> time_scale(np.array([0, 0, 24, 48, 72.0]))
    24.0
    """
    t = np.unique(np.asarray(times, dtype=np.float64))
    return float(np.median(np.diff(t))) if t.size > 1 else 1.0


def paired_sequences(sample: torch.Tensor, time: torch.Tensor, min_length: int = 2) -> Sequences:
    """Cells sharing a sample code form one sequence, ordered by time; shorter than ``min_length`` are dropped.

    Examples
    --------
    >>> import torch
    >>> from biojepa.data import paired_sequences
    >>> seq = paired_sequences(torch.tensor([1, 0, 1, 0, 2]), torch.tensor([5.0, 3.0, 1.0, 0.0, 0.0]))
    >>> seq.cells.tolist(), seq.lengths.tolist()
    ([3, 1, 2, 0], [2, 2])
    """
    sample, time = sample.view(-1).long(), time.view(-1).float()
    order = torch.argsort(time, stable=True)
    order = order[torch.argsort(sample[order], stable=True)]  # by sample, then time
    _, counts = torch.unique_consecutive(sample[order], return_counts=True)
    keep = torch.repeat_interleave(counts >= min_length, counts)
    return Sequences(order[keep], counts[counts >= min_length])


def sinkhorn(cost: torch.Tensor, epsilon: float = 0.05, n_iter: int = 100) -> torch.Tensor:
    r"""Entropic optimal-transport plan between uniform marginals (POT's log-domain Sinkhorn, ``n_iter`` iterations).

    ``cost`` ``(n, m)`` is divided by its mean first, so ``epsilon`` is relative to a typical cost. Runs on the
    tensor's device through POT's torch backend.

    Examples
    --------
    >>> import torch
    >>> from biojepa.data import sinkhorn
    >>> plan = sinkhorn(torch.tensor([[0.0, 1.0], [1.0, 0.0]]), epsilon=0.01)
    >>> plan.round(decimals=3).tolist()
    [[0.5, 0.0], [0.0, 0.5]]
    """
    n, m = cost.shape
    scaled = cost / cost.mean().clamp(min=1e-12)
    a = torch.full((n,), 1.0 / n, device=cost.device, dtype=cost.dtype)
    b = torch.full((m,), 1.0 / m, device=cost.device, dtype=cost.dtype)
    # stopThr=0: exactly n_iter iterations, as in training; the plan is used whether or not it has converged
    return ot.sinkhorn(a, b, scaled, epsilon, method="sinkhorn_log", numItermax=n_iter, stopThr=0.0, warn=False)


def coupled_sequences(
    time: torch.Tensor,
    group: torch.Tensor,
    latent: torch.Tensor,
    ends: torch.Tensor | None = None,
    epsilon: float = 0.05,
    generator: torch.Generator | None = None,
) -> Sequences:
    """Chains through unpaired time points, coupled at population level by mini-batch optimal transport.

    Within each group (covariates; cells of different groups are never coupled), the cells of consecutive time
    points are coupled by an entropic OT plan on squared latent distances (:func:`sinkhorn`). A chain starts at
    a cell and goes back in time, drawing each ancestor from the plan's column of the current cell, to the
    group's first time point. Chains end at the cells marked in ``ends`` (default: every cell after the first
    time point of its group).

    Parameters
    ----------
    time, group
        ``(B,)`` time and group code of each cell.
    latent
        ``(B, d)`` latents the cost is computed on.
    ends
        ``(B,)`` boolean: the cells chains end at.
    epsilon
        Entropic regularisation relative to the mean cost.
    generator
        Random generator for drawing ancestors.

    Examples
    --------
    >>> import torch
    >>> from biojepa.data import coupled_sequences
    >>> time = torch.tensor([0.0, 0.0, 1.0, 1.0])
    >>> latent = torch.tensor([[0.0], [5.0], [5.1], [0.1]])
    >>> seq = coupled_sequences(time, torch.zeros(4), latent, epsilon=0.01)
    >>> seq.cells.tolist(), seq.lengths.tolist()
    ([1, 2, 0, 3], [2, 2])
    """
    time, group = time.view(-1).float(), group.view(-1).long()
    if ends is None:
        ends = torch.ones_like(time, dtype=torch.bool)
    chains: list[torch.Tensor] = []
    for g in torch.unique(group).tolist():
        idx = (group == g).nonzero().view(-1)
        times = torch.unique(time[idx])
        if times.numel() < 2:
            continue
        members = [idx[time[idx] == t] for t in times]
        ancestors = []  # for each step k ≥ 1: ancestor (index into members[k - 1]) of each cell of members[k]
        for k in range(1, len(members)):
            prev, cur = latent[members[k - 1]], latent[members[k]]
            plan = sinkhorn(torch.cdist(prev, cur).pow(2), epsilon)  # (n_prev, n_cur)
            probs = (plan / plan.sum(0, keepdim=True).clamp(min=1e-30)).T  # (n_cur, n_prev)
            ancestors.append(torch.multinomial(probs.clamp(min=0) + 1e-12, 1, generator=generator).view(-1))
        for k in range(1, len(members)):
            for j in (ends[members[k]]).nonzero().view(-1).tolist():
                path, pos = [members[k][j]], j
                for step in range(k, 0, -1):
                    pos = int(ancestors[step - 1][pos])
                    path.append(members[step - 1][pos])
                chains.append(torch.stack(path[::-1]))
    if not chains:
        empty = torch.zeros(0, dtype=torch.long, device=time.device)
        return Sequences(empty, empty)
    lengths = torch.tensor([len(c) for c in chains], device=time.device)
    return Sequences(torch.cat(chains), lengths)


def split_queries(
    sequences: Sequences, forecast: float = 0.5, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Choose the time points to predict in each sequence: ``(N,)`` boolean, at least one visible and one query.

    With probability ``forecast`` a sequence is cut at a random point and everything after it is queried
    (forecasting); otherwise each point is queried with probability 1/2 (interpolation and extrapolation).

    Examples
    --------
    >>> import torch
    >>> from biojepa.data import Sequences, split_queries
    >>> seq = Sequences(torch.arange(5), torch.tensor([2, 3]))
    >>> query = split_queries(seq, generator=torch.Generator().manual_seed(0))
    >>> [int(q.sum()) >= 1 and int((~q).sum()) >= 1 for q in query.split([2, 3])]
    [True, True]
    """
    lengths = sequences.lengths
    seq = sequences.sequence_of_token()
    device = lengths.device
    rank = torch.arange(seq.numel(), device=device) - sequences.first_token()[seq]
    u = torch.rand(len(lengths), generator=generator).to(device)
    cut = 1 + (torch.rand(len(lengths), generator=generator).to(device) * (lengths - 1).float()).long()  # 1..L-1
    query = torch.where(
        (u < forecast)[seq], rank >= cut[seq], torch.rand(seq.numel(), generator=generator).to(device) < 0.5
    )
    n_query = torch.zeros(len(lengths), device=device, dtype=torch.long).index_add_(0, seq, query.long())
    first, last = sequences.first_token(), sequences.first_token() + lengths - 1
    query[first[n_query == lengths]] = False  # all queried: show the first point
    query[last[n_query == 0]] = True  # nothing queried: predict the last point
    return query
