import pytest
import torch

from biojepa.masks import ModuleMaskSampler


def test_masks_disjoint_and_cover_all_modules():
    sampler = ModuleMaskSampler(16, (0.25, 0.5))
    for seed in range(5):
        enc, pred = sampler(32, generator=torch.Generator().manual_seed(seed))
        assert 4 <= pred.shape[1] <= 8
        both = torch.cat([enc, pred], 1).sort(1).values
        assert torch.equal(both, torch.arange(16).expand(32, -1))  # disjoint and complete


def test_seed_deterministic_and_seed_dependent():
    sampler = ModuleMaskSampler(16)
    a = sampler(8, generator=torch.Generator().manual_seed(1))
    b = sampler(8, generator=torch.Generator().manual_seed(1))
    c = sampler(8, generator=torch.Generator().manual_seed(2))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[1], c[1]) or not torch.equal(a[0], c[0])


def test_cells_get_different_masks():
    enc, _ = ModuleMaskSampler(16)(64, generator=torch.Generator().manual_seed(0))
    assert len({tuple(r.tolist()) for r in enc}) > 1


def test_small_module_count_keeps_one_visible_and_one_hidden():
    enc, pred = ModuleMaskSampler(2, (0.25, 0.9))(4, generator=torch.Generator().manual_seed(0))
    assert enc.shape[1] == 1 and pred.shape[1] == 1


@pytest.mark.parametrize(("n", "ratio"), [(1, (0.25, 0.5)), (8, (0.0, 0.5)), (8, (0.6, 0.5)), (8, (0.5, 1.0))])
def test_bad_arguments(n, ratio):
    with pytest.raises(ValueError):
        ModuleMaskSampler(n, ratio)


def _runs(hidden: torch.Tensor) -> int:
    """Number of runs of consecutive indices in a sorted row."""
    return 1 + int((hidden.diff() != 1).sum())


@pytest.mark.parametrize(("n", "ratio", "k"), [(16, (0.25, 0.5), 2), (128, (0.25, 0.5), 4), (4, (0.25, 0.5), 3)])
def test_blocks_are_disjoint_runs(n, ratio, k):
    sampler = ModuleMaskSampler(n, ratio, n_blocks=k)
    for seed in range(20):
        enc, pred = sampler(16, generator=torch.Generator().manual_seed(seed))
        both = torch.cat([enc, pred], 1).sort(1).values
        assert torch.equal(both, torch.arange(n).expand(16, -1))
        assert all(_runs(row) <= min(k, pred.shape[1]) for row in pred)


def test_one_block_is_one_run_anywhere():
    sampler = ModuleMaskSampler(16, (0.25, 0.25), n_blocks=1)  # 4 consecutive modules
    starts = set()
    for seed in range(200):
        _, pred = sampler(1, generator=torch.Generator().manual_seed(seed))
        assert pred.shape[1] == 4 and _runs(pred[0]) == 1
        starts.add(int(pred[0, 0]))
    assert starts == set(range(13))  # every start 0..12 occurs: the run can fall anywhere


def test_scattered_masks_are_not_runs():
    _, pred = ModuleMaskSampler(64, (0.25, 0.25))(32, generator=torch.Generator().manual_seed(0))
    assert sum(_runs(row) for row in pred) / 32 > 4  # uniform masking leaves many separate runs


@pytest.mark.parametrize("k", [0, -1, 1.5, True])
def test_bad_block_count(k):
    with pytest.raises(ValueError, match="mask_blocks"):
        ModuleMaskSampler(16, n_blocks=k)
