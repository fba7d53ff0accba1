import numpy as np
import pandas as pd
import pytest
import torch
from anndata import AnnData

from biojepa.data import (
    Sequences,
    check_time,
    coupled_sequences,
    paired_sequences,
    sinkhorn,
    split_queries,
    time_scale,
)


def _split(seqs: Sequences, values: torch.Tensor) -> list[torch.Tensor]:
    return list(values.split(seqs.lengths.tolist()))


def test_time_scale():
    assert time_scale(np.array([0, 0, 24, 48, 72.0])) == 24.0
    assert time_scale(np.array([10.0, 0.0, 3.0, 1.0, 3.0])) == 2.0  # unsorted, gaps 1, 2, 7
    assert time_scale(np.array([5.0, 5.0])) == 1.0  # a single time point
    assert time_scale(np.array([0, 1, 2])) == 1.0  # integers


def test_paired_sequences_order_and_min_length():
    rng = np.random.default_rng(0)
    sample = torch.as_tensor(rng.integers(0, 12, 80))
    time = torch.as_tensor(rng.permutation(80).astype(np.float32))  # distinct times
    for min_length in (1, 2, 8):
        seqs = paired_sequences(sample, time, min_length=min_length)
        counts = np.bincount(sample.numpy(), minlength=12)
        assert int(seqs.lengths.sum()) == len(seqs.cells)
        assert sorted(seqs.lengths.tolist()) == sorted(c for c in counts if c >= min_length)
        assert seqs.cells.unique().numel() == len(seqs.cells)  # each cell at most once
        seen = set()
        for cells in _split(seqs, seqs.cells):
            codes = sample[cells].unique()
            assert codes.numel() == 1  # one sample per sequence
            seen.add(int(codes))
            assert len(cells) == counts[int(codes)]  # every cell of the sample
            assert (time[cells].diff() > 0).all()  # ordered by time
        assert seen == {s for s in range(12) if counts[s] >= min_length}
        assert torch.equal(seqs.first_token(), torch.cumsum(seqs.lengths, 0) - seqs.lengths)
        assert torch.equal(
            seqs.sequence_of_token(), torch.repeat_interleave(torch.arange(len(seqs.lengths)), seqs.lengths)
        )


def test_paired_sequences_docstring():
    seqs = paired_sequences(torch.tensor([1, 0, 1, 0, 2]), torch.tensor([5.0, 3.0, 1.0, 0.0, 0.0]))
    assert seqs.cells.tolist() == [3, 1, 2, 0] and seqs.lengths.tolist() == [2, 2]


@pytest.mark.parametrize("shape", [(7, 5), (4, 9), (6, 6)])
def test_sinkhorn_marginals(shape):
    n, m = shape
    for seed in range(5):
        cost = torch.rand(n, m, generator=torch.Generator().manual_seed(seed)) * 3
        plan = sinkhorn(cost, epsilon=0.2)  # converged within the default iterations
        assert plan.shape == (n, m) and (plan >= 0).all()
        torch.testing.assert_close(plan.sum(1), torch.full((n,), 1 / n), rtol=1e-3, atol=0)
        torch.testing.assert_close(plan.sum(0), torch.full((m,), 1 / m), rtol=1e-3, atol=0)
        sharp = sinkhorn(cost)  # the default (sharper) plan converges more slowly: marginals within 2%
        torch.testing.assert_close(sharp.sum(1), torch.full((n,), 1 / n), rtol=2e-2, atol=0)
        torch.testing.assert_close(sharp.sum(0), torch.full((m,), 1 / m), rtol=2e-2, atol=0)
        assert (plan * cost).sum() > (sharp * cost).sum()  # less entropy, cheaper transport
    # small epsilon: the plan of a permutation cost is that permutation
    perm = torch.randperm(6, generator=torch.Generator().manual_seed(1))
    cost = torch.ones(6, 6)
    cost[torch.arange(6), perm] = 0.0
    plan = sinkhorn(cost, epsilon=0.01)
    assert torch.equal(plan.argmax(1), perm)
    torch.testing.assert_close(plan[torch.arange(6), perm], torch.full((6,), 1 / 6), atol=1e-3, rtol=0)


def _two_clusters(seed=0, n_per=6, times=(0.0, 1.0, 2.0), groups=(0, 1)):
    """Cells of two well-separated clusters (latent ~0 and ~20, drifting slowly) at each time of each group."""
    gen = torch.Generator().manual_seed(seed)
    time, group, cluster = [], [], []
    for g in groups:
        for t in times:
            for c in (0, 1):
                time += [t] * n_per
                group += [g] * n_per
                cluster += [c] * n_per
    time, group, cluster = torch.tensor(time), torch.tensor(group), torch.tensor(cluster)
    latent = (20.0 * cluster + 0.3 * time)[:, None] + 0.3 * torch.randn(len(time), 2, generator=gen)
    perm = torch.randperm(len(time), generator=gen)  # cells in no particular order
    return time[perm], group[perm], cluster[perm], latent[perm]


@pytest.mark.parametrize("seed", range(3))
def test_coupled_sequences_chains(seed):
    time, group, cluster, latent = _two_clusters(seed)
    gen = torch.Generator().manual_seed(seed)
    seqs = coupled_sequences(time, group, latent, generator=gen)
    chains = _split(seqs, seqs.cells)
    # by default a chain ends at every cell after its group's first time point
    later = (time > 0).nonzero().view(-1)
    assert sorted(int(c[-1]) for c in chains) == later.tolist()
    for chain in chains:
        assert group[chain].unique().numel() == 1  # groups never mixed
        assert (time[chain].diff() > 0).all()  # strictly forward in time
        assert float(time[chain[0]]) == 0.0  # back to the first time point
        assert len(chain) == int(time[chain[-1]]) + 1  # one cell per time point, none skipped
        assert cluster[chain].unique().numel() == 1  # coupled cluster to cluster


def test_coupled_sequences_ends_and_groups():
    time, group, cluster, latent = _two_clusters(0, groups=(0, 1, 2))
    time[group == 2] = 1.0  # group 2 has a single time point: no chain
    ends = (time == 2.0) & (torch.arange(len(time)) % 3 == 0)
    seqs = coupled_sequences(time, group, latent, ends=ends, generator=torch.Generator().manual_seed(0))
    chains = _split(seqs, seqs.cells)
    assert sorted(int(c[-1]) for c in chains) == ends.nonzero().view(-1).tolist()
    assert all(len(c) == 3 and cluster[c].unique().numel() == 1 for c in chains)
    assert not (group[seqs.cells] == 2).any()
    none = coupled_sequences(torch.zeros(4), torch.zeros(4), torch.randn(4, 2))
    assert none.cells.numel() == 0 and none.lengths.numel() == 0


@pytest.mark.parametrize("forecast", [0.0, 0.5, 1.0])
def test_split_queries_keeps_visible_and_query(forecast):
    rng = np.random.default_rng(0)
    lengths = torch.as_tensor(rng.integers(2, 7, 25))
    seqs = Sequences(torch.arange(int(lengths.sum())), lengths)
    suffix_only = True
    for seed in range(60):
        query = split_queries(seqs, forecast=forecast, generator=torch.Generator().manual_seed(seed))
        assert query.dtype == torch.bool and query.shape == seqs.cells.shape
        for q in _split(seqs, query):
            assert q.any() and (~q).any()  # at least one query and one visible point
            is_suffix = bool((q.long().diff() >= 0).all())  # False ... False True ... True
            if forecast == 1.0:
                assert is_suffix
            suffix_only &= is_suffix
    if forecast == 0.0:  # interpolation: queries also before visible points
        assert not suffix_only


def test_check_time_errors():
    adata = AnnData(np.ones((4, 2), dtype=np.float32), obs=pd.DataFrame(index=[f"c{i}" for i in range(4)]))
    adata.obs["day"] = [0, 1, 2, 3]
    check_time(adata, "day")  # integers are fine
    adata.obs["stage"] = ["E1", "E2", "E3", "E4"]
    with pytest.raises(ValueError, match="'stage'.*not numbers"):
        check_time(adata, "stage")
    adata.obs["flag"] = [True, False, True, False]
    with pytest.raises(ValueError, match="'flag'"):
        check_time(adata, "flag")
    adata.obs["hours"] = [0.0, np.nan, 2.0, np.inf]
    with pytest.raises(ValueError, match=r"'hours'.*2 missing or infinite.*'c1', 'c3'"):
        check_time(adata, "hours")
