import torch

from biojepa.data import module_index_from_labels
from biojepa.nn import CellEncoder, GeneTokenizer, Predictor


def _encoder(n_genes=12, n_modules=4, n_latent=5):
    index = torch.from_numpy(module_index_from_labels([g % n_modules for g in range(n_genes)], n_genes))
    return CellEncoder(GeneTokenizer(index, n_genes, 8), n_latent, depth=2, n_heads=2)


def test_encoder_shapes_full_and_masked():
    enc = _encoder()
    x = torch.randn(3, 12)
    tokens, z = enc(x)
    assert tokens.shape == (3, 4, 8) and z.shape == (3, 5)
    keep = torch.tensor([[0, 2], [1, 3], [0, 1]])
    tokens, z = enc(x, keep=keep)
    assert tokens.shape == (3, 2, 8) and z.shape == (3, 5)


def test_masked_encoder_ignores_hidden_modules():
    enc = _encoder().eval()
    x = torch.randn(2, 12)
    keep = torch.tensor([[0, 1], [0, 1]])
    x2 = x.clone()
    x2[:, 2::4] += 3.0  # genes of module 2 (hidden)
    assert torch.allclose(enc(x, keep)[1], enc(x2, keep)[1])
    assert not torch.allclose(enc(x)[1], enc(x2)[1])


def test_predictor_shape_and_condition():
    pred = Predictor(n_latent=5, n_modules=4, n_target=8, dim=16, depth=1, n_heads=2).predict_modules
    z = torch.randn(3, 5)
    masks = torch.tensor([[1, 3], [0, 2], [2, 3]])
    out = pred(z, masks)
    assert out.shape == (3, 2, 8)
    assert not torch.allclose(out, pred(z, masks, condition=torch.randn(3, 16)))


def test_pooling_cls_and_both_read_every_token_and_respect_hidden_modules():
    index = torch.from_numpy(module_index_from_labels([g % 4 for g in range(12)], 12))
    for pooling in ("cls", "both"):
        enc = CellEncoder(GeneTokenizer(index, 12, 8), 5, depth=1, n_heads=2, pooling=pooling).eval()
        x = torch.randn(2, 12)
        tokens, z = enc(x)
        assert tokens.shape == (2, 4, 8) and z.shape == (2, 5)  # the CLS state is not returned as a module token
        keep = torch.tensor([[0, 1], [0, 1]])
        x2 = x.clone()
        x2[:, 2::4] += 3.0  # genes of module 2, hidden from the context
        assert torch.allclose(enc(x, keep)[1], enc(x2, keep)[1])
        assert not torch.allclose(enc(x)[1], enc(x2)[1])
    assert enc.to_latent.in_features == 16  # "both": mean of the tokens and the CLS state, concatenated


def test_pooling_rejects_unknown():
    import pytest

    index = torch.from_numpy(module_index_from_labels([0, 1], 2))
    with pytest.raises(ValueError, match="pooling"):
        CellEncoder(GeneTokenizer(index, 2, 8), 3, depth=1, n_heads=2, pooling="max")
