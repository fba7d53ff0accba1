import pytest
import torch

from biojepa.nn import VelocityField, flow_matching_loss, integrate, ot_pairing


def test_ot_pairing_undoes_a_shuffle():
    gen = torch.Generator().manual_seed(0)
    x0 = torch.randn(32, 3, generator=gen) * 5
    perm = torch.randperm(32, generator=gen)
    x1 = x0[perm] + 0.01
    idx = ot_pairing(x0, x1, gen)
    torch.testing.assert_close(x1[idx], x0 + 0.01)


def test_flow_learns_a_scaled_and_shifted_gaussian():
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    field = VelocityField(2, 4, n_hidden=32)
    shift = torch.tensor([2.0, -1.0])
    condition = torch.cat([shift, torch.zeros(2)])[None].expand(128, -1)
    opt = torch.optim.Adam(field.parameters(), lr=5e-3)
    for _ in range(200):
        x0 = torch.randn(128, 2, generator=gen)
        x1 = 0.3 * torch.randn(128, 2, generator=gen) + shift  # narrower than the source: not a translation
        x1 = x1[ot_pairing(x0, x1, gen)]
        loss = flow_matching_loss(field, x0, x1, condition, generator=gen)
        opt.zero_grad()
        loss.backward()
        opt.step()
    out = integrate(field, torch.randn(1000, 2, generator=gen), condition[:1].expand(1000, -1), n_steps=10)
    torch.testing.assert_close(out.mean(0), shift, atol=0.1, rtol=0)
    assert out.std(0).max() < 0.5  # the spread shrank from 1 towards 0.3


def test_untrained_field_translates_and_bad_steps_raise():
    field = VelocityField(3, 6)
    x0, condition = torch.randn(4, 3), torch.randn(4, 6)
    torch.testing.assert_close(integrate(field, x0, condition, 3), x0 + condition[:, :3])
    with pytest.raises(ValueError, match="n_steps"):
        integrate(field, x0, condition, 0)
    with pytest.raises(ValueError, match="n_condition=2"):
        VelocityField(3, 2)
