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
