import pytest
import torch

from biojepa.nn import CountReadout


@pytest.mark.parametrize("rate", [0.05, 0.5, 5.0])
def test_sparse_nll_equals_scvi_negative_binomial(rate):
    torch.manual_seed(0)
    head = CountReadout(n_latent=4, n_genes=30)
    head.log_theta.data.normal_()
    z, counts = torch.randn(16, 4), torch.poisson(torch.full((16, 30), rate))
    counts[0] = 0.0  # a cell without counts: its library is floored at 1
    library = counts.sum(1, keepdim=True)
    expected = -head(z, library.clamp(min=1.0)).log_prob(counts).mean()
    assert torch.allclose(head.nll(z, counts), expected, rtol=1e-5, atol=1e-6)
    grads = torch.autograd.grad(head.nll(z, counts), [head.log_theta, *head.net.parameters()])
    ref = torch.autograd.grad(-head(z, library.clamp(min=1.0)).log_prob(counts).mean(),
                              [head.log_theta, *head.net.parameters()])  # fmt: skip
    assert all(torch.allclose(g, r, rtol=1e-4, atol=1e-6) for g, r in zip(grads, ref, strict=True))
