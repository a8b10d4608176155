"""FSQ: the peer's codes and outputs, the grid's conventions, gradients and the level helper."""

import math

import pytest
import torch

from vqlab.quantizers.fsq import BOUND_EPS, FSQ, fsq_levels_for

LEVEL_SETS = [(8, 5, 5, 5), (8, 8, 8, 6, 5), (7, 5, 5, 5, 5)]


def inputs_for_codes(fsq: FSQ, indices: torch.Tensor) -> torch.Tensor:
    """Grid-space inputs (N, d) whose bounded value sits on the centre of each code's level:
    the bound inverted at the integer level r, ``atanh((r + offset) / half) - shift``."""
    r = fsq.indices_to_codes(indices) * fsq._width  # (N, d) integer levels
    return torch.atanh((r + fsq._offset) / fsq._half) - fsq._shift


@pytest.mark.parametrize("levels", LEVEL_SETS)
@pytest.mark.parametrize("projected", [False, True])
def test_same_indices_and_outputs_as_the_peer(levels, projected):
    peer_lib = pytest.importorskip("vector_quantize_pytorch")
    torch.manual_seed(0)
    dim = 16 if projected else len(levels)
    peer = peer_lib.FSQ(list(levels), dim=dim)
    ours = FSQ(dim, levels)
    if projected:  # the same projection weights, so any difference is in the quantization
        ours.project_in.load_state_dict(peer.project_in.state_dict())
        ours.project_out.load_state_dict(peer.project_out.state_dict())
    x = torch.randn(2, 300, dim) * 2  # wide enough to reach the outer levels
    peer_out, peer_idx = peer(x)
    out = ours(x)
    assert torch.equal(out.indices, peer_idx.long())
    # the peer's round_ste is b + sg(round(b) - b), ours sg(round(b)) + b - sg(b): equal values
    torch.testing.assert_close(out.quantized, peer_out, rtol=1e-6, atol=1e-6)
    assert torch.equal(ours.implicit_codes, peer.implicit_codebook)
    assert ours.codebook_size == math.prod(levels) == peer.codebook_size
    idx = torch.randint(0, ours.codebook_size, (50,))
    torch.testing.assert_close(ours.lookup(idx), peer.indices_to_codes(idx))


@pytest.mark.parametrize("levels", [(8, 5, 5, 5), (7, 5, 5, 5, 5)])
def test_every_implicit_code_is_reachable(levels):
    fsq = FSQ(len(levels), levels)
    every = torch.arange(fsq.codebook_size)
    out = fsq(inputs_for_codes(fsq, every))
    assert torch.equal(out.indices, every)
    assert torch.equal(out.quantized, fsq.implicit_codes)


def test_mixed_radix_index_basis():
    fsq = FSQ(4, (8, 5, 5, 5))  # levels (-4..3), (-2..2) x3; the lowest level is digit 0
    low = torch.tensor([-1.0, -1.0, -1.0, -1.0])  # code of all-lowest digits
    step0 = low + torch.tensor([0.25, 0, 0, 0])  # digit 1 on channel 0 (1 / (8 // 2))
    step1 = low + torch.tensor([0, 0.5, 0, 0])  # digit 1 on channel 1 (1 / (5 // 2))
    top = torch.tensor([0.75, 1.0, 1.0, 1.0])
    codes = torch.stack([low, step0, step1, top])
    assert fsq.codes_to_indices(codes).tolist() == [0, 1, 8, 999]
    assert torch.equal(fsq.indices_to_codes(torch.tensor([0, 1, 8, 999])), codes)


def test_bound_is_zero_at_zero_unlike_the_papers_tan_shift():
    """The paper's listing: half = (L-1)(1-eps)/2, shift = tan(offset/half). Ours (= the peer's):
    (1+eps) and atanh, so b(0) = 0 exactly; the paper's b(0) is off the level centre. The codes
    of the two agree except in thin bands at the level edges."""
    levels = (8, 6, 5)
    fsq = FSQ(3, levels)
    assert torch.equal(fsq.bound(torch.zeros(3)), torch.zeros(3))
    lv = torch.tensor(levels, dtype=torch.float64)
    half = (lv - 1) * (1 - BOUND_EPS) / 2
    offset = (lv % 2 == 0).double() * 0.5

    def paper_bound(h: torch.Tensor) -> torch.Tensor:
        return torch.tanh(h + torch.tan(offset / half)) * half - offset

    assert paper_bound(torch.zeros(3, dtype=torch.float64))[:2].abs().min() > 1e-8  # even L
    h = torch.randn(20000, 3, generator=torch.Generator().manual_seed(0))
    ours = fsq.bound(h).round()
    paper = paper_bound(h.double()).round().float()
    assert torch.equal(paper.amin(0), ours.amin(0)) and torch.equal(paper.amax(0), ours.amax(0))
    assert (ours == paper).all(1).float().mean() > 0.99


def test_lookup_equals_forward_channel_first_and_codebook_in_input_space():
    torch.manual_seed(0)
    fsq = FSQ(6, (8, 5, 5, 5), channel_dim=1).eval()
    z = torch.randn(2, 6, 3, 4)  # (B, D, H, W)
    out = fsq(z)
    assert out.quantized.shape == z.shape and out.indices.shape == (2, 3, 4)
    assert out.indices.dtype == torch.int64
    assert torch.equal(fsq.lookup(out.indices), out.quantized)
    assert fsq.codebook.shape == (1000, 6)
    flat_q = out.quantized.movedim(1, -1).reshape(-1, 6)
    torch.testing.assert_close(fsq.codebook[out.indices.reshape(-1)], flat_q)
    assert torch.equal(fsq.to_code_space(z), z.movedim(1, -1).reshape(-1, 6))
    assert out.loss.item() == 0.0 and out.losses == {}


def test_straight_through_gradient_is_the_bounds_slope():
    levels = (8, 5, 5, 5)
    fsq = FSQ(4, levels)
    h = torch.randn(64, 4, requires_grad=True)
    fsq(h).quantized.sum().backward()
    t = torch.tanh(h.detach() + fsq._shift)
    slope = (1 - t**2) * fsq._half / fsq._width  # d b / d h through tanh, over L // 2
    torch.testing.assert_close(h.grad, slope)
    assert (h.grad > 0).all()


def test_gradient_reaches_the_input_and_projections():
    torch.manual_seed(0)
    fsq = FSQ(12, (7, 5, 5, 5, 5))
    z = torch.randn(4, 10, 12, requires_grad=True)
    fsq(z).quantized.pow(2).sum().backward()
    assert z.grad is not None and z.grad.abs().sum() > 0 and torch.isfinite(z.grad).all()
    assert fsq.project_in.weight.grad.abs().sum() > 0
    assert fsq.project_out.weight.grad.abs().sum() > 0


def test_seeded_builds_and_forwards_are_bitwise_reproducible():
    def run() -> tuple[torch.Tensor, torch.Tensor]:
        torch.manual_seed(3)
        fsq = FSQ(10, (8, 8, 8, 6, 5))
        out = fsq(torch.randn(5, 7, 10))
        return out.quantized, out.indices

    (q1, i1), (q2, i2) = run(), run()
    assert torch.equal(q1, q2) and torch.equal(i1, i2)


def test_levels_for_follows_the_papers_table():
    assert fsq_levels_for(2**8) == (8, 6, 5)
    assert fsq_levels_for(2**10) == (8, 5, 5, 5)
    assert fsq_levels_for(2**12) == (7, 5, 5, 5, 5)
    assert fsq_levels_for(2**14) == (8, 8, 8, 6, 5)
    assert fsq_levels_for(2**16) == (8, 8, 8, 5, 5, 5)
    # between table entries: nearest by ratio (512: 1000/512 = 1.95 beats 512/240 = 2.13)
    assert fsq_levels_for(512) == (8, 5, 5, 5)
    assert fsq_levels_for(3000) == (7, 5, 5, 5, 5)
    for k in (2**7, 2**17):
        with pytest.raises(ValueError, match="levels explicitly"):
            fsq_levels_for(k)


def test_init_fits_projections_and_is_a_no_op_without_them():
    torch.manual_seed(0)
    # data near a 4-dim subspace of D=16, at a scale (x5) the tanh bound would saturate
    z = (torch.randn(2000, 4) @ torch.randn(4, 16)) * 5 + 0.05 * torch.randn(2000, 16)
    fsq = FSQ(16, (8, 5, 5, 5))
    before = ((fsq(z).quantized - z) ** 2).mean()
    fsq.init_from_data(z, method="kmeans")
    after = ((fsq(z).quantized - z) ** 2).mean()
    # 5 to 8 levels per principal axis leave about a tenth of the variance (86 -> 7.9 here)
    assert bool(fsq.initialized) and after < 0.15 * before
    assert fsq(z).indices.unique().numel() > 300  # the whitened data spreads over the grid
    kept = FSQ(16, (8, 5, 5, 5))
    weight = kept.project_in.weight.clone()
    kept.init_from_data(z, method="none")
    assert torch.equal(kept.project_in.weight, weight) and bool(kept.initialized)
    plain = FSQ(4, (8, 5, 5, 5))
    plain.init_from_data(torch.randn(10, 4))
    assert bool(plain.initialized) and plain.state_dict().keys() == {"initialized"}
    with pytest.raises(ValueError, match="unknown init method"):
        plain.init_from_data(torch.randn(10, 4), method="bogus")


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match=">= 3"):
        FSQ(3, (8, 2, 5))
    with pytest.raises(ValueError, match="non-empty"):
        FSQ(3, ())
    fsq = FSQ(4, (8, 5, 5, 5))
    with pytest.raises(ValueError, match="D=4"):
        fsq(torch.randn(3, 5))
    with pytest.raises(ValueError, match="indices must lie"):
        fsq.lookup(torch.tensor([1000]))
