import torch

from biojepa.data import module_index_from_labels
from biojepa.nn import GeneTokenizer


def _tokenizer(n_genes=10, labels=(0, 0, 0, 1, 1, 1, 1, 2, 2, 2), n_embed=8):
    index = torch.from_numpy(module_index_from_labels(list(labels), n_genes))
    return GeneTokenizer(index, n_genes, n_embed)


def test_shape_one_token_per_module():
    tok = _tokenizer()
    out = tok(torch.randn(5, 10))
    assert out.shape == (5, 3, 8)
    assert torch.isfinite(out).all()


def test_token_depends_only_on_its_module_genes():
    tok = _tokenizer()
    x = torch.randn(2, 10)
    x2 = x.clone()
    x2[:, 3:7] += 5.0  # genes of module 1 only
    a, b = tok(x), tok(x2)
    assert torch.allclose(a[:, 0], b[:, 0]) and torch.allclose(a[:, 2], b[:, 2])
    assert not torch.allclose(a[:, 1], b[:, 1])


def test_padding_slot_gets_no_gradient_and_every_gene_does():
    tok = _tokenizer()
    tok(torch.randn(4, 10)).pow(2).sum().backward()
    grad = tok.gene_embedding.grad
    assert grad.shape == (10, 8)
    assert (grad.abs().sum(1) > 0).all()


def test_unequal_modules_are_padded():
    index = module_index_from_labels(["a", "b", "b", "b"], 4)
    assert index.shape == (2, 3)
    assert (index[0, 1:] == 4).all()
