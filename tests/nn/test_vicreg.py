import torch

from biojepa.nn import effective_rank, vicreg_covariance, vicreg_variance


def test_collapsed_batch_scores_worse():
    g = torch.Generator().manual_seed(0)
    spread = torch.randn(256, 16, generator=g)
    collapsed = torch.ones(256, 16) + 1e-3 * torch.randn(256, 16, generator=g)
    assert vicreg_variance(collapsed) > 0.9
    assert vicreg_variance(spread) < 0.1
    rank_one = torch.randn(256, 1, generator=g) @ torch.ones(1, 16)
    assert vicreg_covariance(rank_one) > 10 * vicreg_covariance(spread)


def test_effective_rank_bounds():
    g = torch.Generator().manual_seed(0)
    assert effective_rank(torch.randn(512, 8, generator=g)) > 7.0
    one_dir = torch.randn(512, 1, generator=g) @ torch.randn(1, 8, generator=g)
    assert effective_rank(one_dir) < 1.1
