import numpy as np
import pytest
import torch

from biojepa.nn import PackedTransformer, Predictor, RotaryEmbedding, Segment, pack, run_packed

DIM = 8


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    return PackedTransformer(dim=DIM, depth=2, n_heads=2).eval()


def _segment(lengths, seed=0, positions=True):
    gen = torch.Generator().manual_seed(seed)
    lengths = torch.as_tensor(lengths)
    tokens = torch.randn(int(lengths.sum()), DIM, generator=gen)
    pos = None
    if positions:  # irregular, increasing times starting at 0 in each sample
        pos = torch.cat(
            [torch.cat([torch.zeros(1), torch.rand(n - 1, generator=gen).add(0.5).cumsum(0)]) for n in lengths]
        )
    return Segment(tokens, lengths, pos)


def _check_layout(lengths, capacity=None):
    lengths = torch.as_tensor(lengths)
    layout = pack(lengths, capacity)
    n_tokens = int(lengths.sum())
    cap = int(lengths.max()) if capacity is None else capacity
    assert layout.capacity == cap
    assert layout.sample_id.shape == (layout.rows, cap)
    slot = layout.slot
    assert slot.shape == (n_tokens,)
    assert slot.unique().numel() == n_tokens  # every token gets its own slot
    assert int(slot.min()) >= 0 and int(slot.max()) < layout.rows * cap
    sample = torch.repeat_interleave(torch.arange(len(lengths)), lengths)
    assert torch.equal(layout.sample_id.view(-1)[slot], sample)
    assert int((layout.sample_id == -1).sum()) == layout.rows * cap - n_tokens
    for s, n in enumerate(lengths.tolist()):
        mine = slot[sample == s]
        assert (mine // cap).unique().numel() == 1  # never split across rows
        assert torch.equal(mine, mine[0] + torch.arange(n))  # contiguous, in input order
    # first fit: a row is only opened when no earlier row had room, so no two rows could be merged
    used = (layout.sample_id >= 0).sum(1)
    for i in range(layout.rows):
        for j in range(i + 1, layout.rows):
            assert used[i] + used[j] > cap
    return layout


def test_pack_layout_docstring_example():
    layout = _check_layout([3, 1, 2, 2])
    assert (layout.rows, layout.capacity) == (3, 3)
    assert layout.sample_id.tolist() == [[0, 0, 0], [2, 2, 1], [3, 3, -1]]
    assert not layout.single
    mask = layout.attention_mask()
    assert mask.shape == (3, 1, 3, 3)
    assert mask[1, 0].tolist() == [[True, True, False], [True, True, False], [False, False, True]]
    assert mask[2, 0, 2].tolist() == [False, False, True]  # an empty slot sees only empty slots


@pytest.mark.parametrize("seed", range(5))
def test_pack_random_lengths(seed):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, 9, size=int(rng.integers(1, 30)))
    for capacity in (None, int(lengths.max()) + 5):
        layout = _check_layout(lengths, capacity=capacity)
        assert layout.capacity == (capacity or int(lengths.max()))
        assert int((layout.sample_id >= 0).sum()) == int(lengths.sum())  # every token placed, once
        assert layout.rows >= -(-int(lengths.sum()) // layout.capacity)  # no row over capacity


def test_equal_lengths_are_plain_batching():
    layout = _check_layout([4, 4, 4])
    assert layout.single and layout.rows == 3 and layout.attention_mask() is None
    packed = _check_layout([2, 2], capacity=4)  # two samples in one row: needs a mask
    assert not packed.single and packed.rows == 1 and packed.attention_mask() is not None


def test_pack_errors():
    with pytest.raises(ValueError, match="at least one token"):
        pack(torch.tensor([2, 0, 1]))
    with pytest.raises(ValueError, match="at least one token"):
        pack(torch.tensor([], dtype=torch.long))
    with pytest.raises(ValueError, match="capacity"):
        pack(torch.tensor([2, 5]), capacity=4)
    with pytest.raises(ValueError, match="even"):
        RotaryEmbedding(head_dim=3)
    with pytest.raises(ValueError, match="even"):
        PackedTransformer(dim=6, depth=1, n_heads=2)  # head width 3


def test_block_diagonal_attention(net):
    seg = _segment([3, 2, 4])
    assert pack(seg.lengths, capacity=9).rows == 1  # all three samples share one row
    out = run_packed(net, net.rope, [seg], capacity=9)[0]
    assert out.shape == (9, DIM)

    changed = Segment(seg.tokens.clone(), seg.lengths, seg.positions)
    changed.tokens[:3] = torch.randn(3, DIM)  # new tokens for sample 0 only
    out2 = run_packed(net, net.rope, [changed], capacity=9)[0]
    assert not torch.allclose(out[:3], out2[:3], atol=1e-3)  # sample 0 did change
    torch.testing.assert_close(out[3:], out2[3:], atol=1e-6, rtol=0)  # the others never saw it

    # each sample packed with the others equals the sample run alone
    for s, (tok, pos) in enumerate(zip(seg.tokens.split([3, 2, 4]), seg.positions.split([3, 2, 4]), strict=True)):
        alone = run_packed(net, net.rope, [Segment(tok, torch.tensor([len(tok)]), pos)])[0]
        torch.testing.assert_close(out.split([3, 2, 4])[s], alone, atol=1e-5, rtol=0)


def test_positions_restart_per_sample(net):
    seg = _segment([2, 3])
    layout = pack(seg.lengths, capacity=5)
    # first-fit decreasing puts the longer sample 1 at slots 0-2, so sample 0 sits at slots 3-4 of the same row
    assert layout.rows == 1 and layout.slot.tolist() == [3, 4, 0, 1, 2]
    out = run_packed(net, net.rope, [seg], capacity=5)[0]
    for tok, pos, part in zip(seg.tokens.split([2, 3]), seg.positions.split([2, 3]), out.split([2, 3]), strict=True):
        alone = run_packed(net, net.rope, [Segment(tok, torch.tensor([len(tok)]), pos)])[0]
        torch.testing.assert_close(part, alone, atol=1e-5, rtol=0)


def test_rope_relative_positions(net):
    seg = _segment([4, 3], seed=1)
    out = run_packed(net, net.rope, [seg], capacity=7)[0]
    # shifting every position of sample 0 by a constant changes nothing (attention sees differences only)
    shifted = seg.positions.clone()
    shifted[:4] += 7.25
    out_shift = run_packed(net, net.rope, [Segment(seg.tokens, seg.lengths, shifted)], capacity=7)[0]
    torch.testing.assert_close(out, out_shift, atol=1e-5, rtol=0)
    # changing the spacing of sample 0 changes its outputs, and only its outputs
    stretched = seg.positions.clone()
    stretched[:4] *= 3.0
    out_stretch = run_packed(net, net.rope, [Segment(seg.tokens, seg.lengths, stretched)], capacity=7)[0]
    assert not torch.allclose(out[:4], out_stretch[:4], atol=1e-3)
    torch.testing.assert_close(out[4:], out_stretch[4:], atol=1e-6, rtol=0)
    # without positions (a set) the outputs differ from the ordered sample
    unordered = run_packed(net, net.rope, [Segment(seg.tokens, seg.lengths)], capacity=7)[0]
    assert not torch.allclose(out[:4], unordered[:4], atol=1e-3)


def test_rotary_dot_products_depend_on_differences_only():
    rope = RotaryEmbedding(head_dim=6, base=10.0)
    gen = torch.Generator().manual_seed(0)
    q, k = torch.randn(1, 1, 1, 6, generator=gen), torch.randn(1, 1, 1, 6, generator=gen)

    def score(pq, pk):
        cq, sq = rope(torch.tensor([[pq]]))
        ck, sk = rope(torch.tensor([[pk]]))
        return float((rope.rotate(q, cq, sq) * rope.rotate(k, ck, sk)).sum())

    assert score(1.0, 3.5) == pytest.approx(score(11.0, 13.5), abs=1e-5)
    assert score(1.0, 3.5) != pytest.approx(score(1.0, 5.0), abs=1e-3)
    cos, sin = rope(torch.tensor([[0.0, 2.0, 5.0]]))
    x = torch.randn(1, 2, 3, 6, generator=gen)
    torch.testing.assert_close(rope.rotate(x, cos, sin).norm(dim=-1), x.norm(dim=-1))  # a rotation
    torch.testing.assert_close(rope.rotate(x, cos, sin)[:, :, 0], x[:, :, 0])  # position 0: identity


def test_predictor_mixes_segments():
    torch.manual_seed(0)
    pred = Predictor(n_latent=3, n_modules=4, n_target=8, dim=16, depth=2, n_heads=2, perturbation_dim=5).eval()
    gen = torch.Generator().manual_seed(1)
    z, masks = torch.randn(1, 3, generator=gen), torch.tensor([[2]])
    module = pred.module_segment(z, masks)  # 1 sample of 2 tokens
    query = torch.tensor([False, False, True, True, False, True])
    time = pred.time_segment(
        torch.randn(6, 3, generator=gen), query, torch.tensor([4, 2]), torch.tensor([0.0, 1.0, 2.5, 4.0, 0.0, 3.0])
    )
    pert = pred.perturbation_segment(
        torch.randn(2, 5, generator=gen),
        torch.randn(2, 3, 5, generator=gen),
        torch.tensor([[True, False, False], [True, True, True]]),
    )
    assert module.lengths.tolist() == [2] and pert.lengths.tolist() == [2, 4]
    segments = [module, time, pert]
    kinds = torch.repeat_interleave(torch.arange(3), torch.tensor([len(s.lengths) for s in segments]))
    layout = pack(torch.cat([s.lengths for s in segments]))
    assert any(kinds[row[row >= 0]].unique().numel() > 1 for row in layout.sample_id)  # a row mixes kinds

    outs = pred(segments)
    assert [o.shape for o in outs] == [(2, 16), (6, 16), (6, 16)]
    for seg, out in zip(segments, outs, strict=True):
        torch.testing.assert_close(out, pred([seg])[0], atol=1e-5, rtol=0)
    # the task heads read the packed outputs
    torch.testing.assert_close(pred.module_output(outs[0], masks), pred.predict_modules(z, masks), atol=1e-5, rtol=0)
    assert pred.interaction_output(outs[2], pert.lengths).shape == (2, 3)
    # the time segment depends on its positions (RoPE over time)
    moved = Segment(time.tokens, time.lengths, time.positions * 2)
    assert not torch.allclose(pred([moved])[0][:4], outs[1][:4], atol=1e-3)
