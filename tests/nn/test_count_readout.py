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


def test_gene_subset_scores_the_subset_renormalized():
    """Scoring a subset equals a readout of those genes alone (same weights) with the subset's counts and library."""
    torch.manual_seed(0)
    head = CountReadout(n_latent=3, n_genes=12)
    head.log_theta.data.normal_()
    z, counts = torch.randn(8, 3), torch.poisson(torch.full((8, 12), 2.0))
    genes = torch.tensor([1, 4, 7, 10])
    alone = CountReadout(n_latent=3, n_genes=4)
    with torch.no_grad():
        alone.net.net[0].load_state_dict(head.net.net[0].state_dict())
        alone.net.net[2].weight.copy_(head.net.net[2].weight[genes])
        alone.net.net[2].bias.copy_(head.net.net[2].bias[genes])
        alone.log_theta.copy_(head.log_theta[genes])
    sub = counts[:, genes]
    assert torch.allclose(head.nll(z, counts, genes=genes), alone.nll(z, sub), rtol=1e-6)
    # the full library is ignored with a subset: the subset's own total is the library
    assert torch.allclose(head.nll(z, counts, library=torch.full((8, 1), 1e4), genes=genes), alone.nll(z, sub))
    assert torch.allclose(head.nll(z, counts, genes=torch.arange(12)), head.nll(z, counts), rtol=1e-6)
    grad = torch.autograd.grad(head.nll(z, counts, genes=genes), head.log_theta)[0]
    assert (grad[genes] != 0).all() and (grad[[0, 2, 3]] == 0).all()  # only the drawn genes are fitted
