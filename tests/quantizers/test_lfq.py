"""LFQ: the peer's codes, outputs and losses, a hand-computed entropy, gradients, conventions."""

import math

import pytest
import torch

from vqlab.quantizers.lfq import LFQ, lfq_entropies

TERMS = ("per_sample_entropy", "codebook_entropy", "commitment")


def peer_pair(k: int, dim: int) -> tuple[LFQ, torch.nn.Module]:
    """Ours and the peer's LFQ with the same weights and loss weights (peer commitment is 0 by
    default, so it is set to ours)."""
    peer_lib = pytest.importorskip("vector_quantize_pytorch")
    torch.manual_seed(0)
    peer = peer_lib.LFQ(
        dim=dim, codebook_size=k, entropy_loss_weight=0.1, commitment_loss_weight=0.25
    )
    ours = LFQ(dim, k, entropy_weight=0.1, commitment_weight=0.25)
    if ours.project_in is not None:
        ours.project_in.load_state_dict(peer.project_in.state_dict())
        ours.project_out.load_state_dict(peer.project_out.state_dict())
    return ours, peer


def dense_entropies(h: torch.Tensor, codes: torch.Tensor, tau: float, floor: float = 0.0):
    """The dense reference: p = softmax(-tau ||h - c||^2) over all K codes (N, K); entropies
    with ``p`` clamped at ``floor`` inside the log (the peer's 1e-5), 0 for the exact value."""
    p = torch.softmax(-tau * torch.cdist(h.double(), codes.double()) ** 2, dim=1)

    def entropy(q: torch.Tensor) -> torch.Tensor:
        return -(q * q.clamp_min(max(floor, 1e-300)).log()).sum(-1)

    return entropy(p).mean(), entropy(p.mean(0))


@pytest.mark.parametrize("k", [2**10, 2**12])
@pytest.mark.parametrize("dim", [0, 16])  # 0: dim = log2 K, no projection
def test_same_indices_outputs_and_losses_as_the_peer(k, dim):
    dim = dim or k.bit_length() - 1
    ours, peer = peer_pair(k, dim)
    x = torch.randn(2, 64, dim)
    (peer_q, peer_idx, peer_loss), peer_terms = peer(x, return_loss_breakdown=True)
    out = ours(x)
    assert torch.equal(out.indices, peer_idx.long())
    torch.testing.assert_close(out.quantized, peer_q, rtol=0, atol=0)
    torch.testing.assert_close(out.losses["commitment"], peer_terms.commitment)
    # the peer clamps p at 1e-5 in the log, which can only lower its entropies (tested below)
    for name, theirs in zip(TERMS[:2], peer_terms[:2]):
        assert out.losses[name].item() >= theirs.item() - 1e-5
        assert out.losses[name].item() == pytest.approx(theirs.item(), abs=1e-3)
    torch.testing.assert_close(ours.implicit_codes, peer.codebook)
    idx = torch.randint(0, k, (2, 50))
    torch.testing.assert_close(ours.lookup(idx), peer.indices_to_codes(idx), rtol=0, atol=0)


@pytest.mark.parametrize("k", [2**10, 2**12])
def test_losses_equal_the_peer_to_rounding_where_its_clamp_is_inactive(k):
    """With |h| <= 1e-3 and tau = 100 every code probability exceeds 1e-5, so the peer's clamp
    never binds and the two definitions are the same number."""
    d = k.bit_length() - 1
    ours, peer = peer_pair(k, d)
    x = (torch.rand(2, 64, d) * 2 - 1) * 1e-3
    (_, _, peer_loss), peer_terms = peer(x, return_loss_breakdown=True)
    out = ours(x)
    for name, theirs in zip(TERMS, peer_terms):
        torch.testing.assert_close(out.losses[name], theirs, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(out.loss, peer_loss, rtol=1e-5, atol=1e-6)


def test_factorized_entropies_equal_the_dense_softmax_and_the_clamp_explains_the_peer():
    torch.manual_seed(0)
    lfq = LFQ(6, 2**6)
    h = torch.randn(300, 6)
    ours = lfq_entropies(4 * lfq.inv_temperature * h)
    exact = dense_entropies(h, lfq.implicit_codes, lfq.inv_temperature)
    clamped = dense_entropies(h, lfq.implicit_codes, lfq.inv_temperature, floor=1e-5)
    for a, b, c in zip(ours, exact, clamped):
        assert a.item() == pytest.approx(b.item(), rel=1e-5, abs=1e-6)
        assert c.item() < b.item()  # the peer's clamp lowers the entropy at tau = 100


def test_entropy_and_commitment_on_a_hand_computed_case():
    # K = 4, tau = 1/4: the bit-1 logit 4 tau s h = h, so h = +-ln 3 gives P(bit = 1) = 3/4, 1/4
    lfq = LFQ(2, 4, entropy_weight=0.1, commitment_weight=0.25, inv_temperature=0.25)
    a = math.log(3.0)
    h = torch.tensor([[a, -a], [-a, -a]])  # bits (1, 0) -> index 2, bits (0, 0) -> index 0
    out = lfq(h)
    assert out.indices.tolist() == [2, 0]
    # codes 00, 01, 10, 11 (channel 0 the high bit): position 1 has P(b0=1)=3/4, P(b1=1)=1/4
    p1 = [1 / 4 * 3 / 4, 1 / 4 * 1 / 4, 3 / 4 * 3 / 4, 3 / 4 * 1 / 4]
    p2 = [3 / 4 * 3 / 4, 3 / 4 * 1 / 4, 1 / 4 * 3 / 4, 1 / 4 * 1 / 4]
    mean = [(u + v) / 2 for u, v in zip(p1, p2)]  # 3/8, 1/8, 3/8, 1/8

    def entropy(p: list[float]) -> float:
        return -sum(x * math.log(x) for x in p)

    per_sample = (entropy(p1) + entropy(p2)) / 2
    codebook = entropy(mean)
    commitment = (a - 1) ** 2  # every element is ln 3 away from its code +-1
    assert out.losses["per_sample_entropy"].item() == pytest.approx(per_sample, rel=1e-6)
    assert out.losses["codebook_entropy"].item() == pytest.approx(codebook, rel=1e-6)
    assert out.losses["commitment"].item() == pytest.approx(commitment, rel=1e-5)
    loss = 0.1 * (per_sample - codebook) + 0.25 * commitment
    assert out.loss.item() == pytest.approx(loss, rel=1e-5)


@pytest.mark.parametrize("k", [2**4, 2**10])
def test_every_code_is_reachable_and_channel_0_is_the_high_bit(k):
    d = k.bit_length() - 1
    lfq = LFQ(d, k)
    every = torch.arange(k)
    out = lfq(lfq.implicit_codes)
    assert torch.equal(out.indices, every)
    assert torch.equal(out.quantized, lfq.implicit_codes)
    high = -torch.ones(d)
    high[0] = 1.0
    assert lfq(high[None]).indices.item() == 2 ** (d - 1)
    assert lfq(torch.zeros(1, d)).indices.item() == 0  # zero is quantized to -s (bit 0)


def test_lookup_equals_forward_channel_first_and_codebook_in_input_space():
    torch.manual_seed(0)
    lfq = LFQ(8, 2**5, channel_dim=1, codebook_scale=0.5).eval()
    z = torch.randn(2, 8, 3, 4)  # (B, D, H, W)
    out = lfq(z)
    assert out.quantized.shape == z.shape and out.indices.shape == (2, 3, 4)
    assert torch.equal(lfq.lookup(out.indices), out.quantized)
    assert lfq.codebook.shape == (32, 8)
    assert set(lfq.implicit_codes.unique().tolist()) == {-0.5, 0.5}
    flat_q = out.quantized.movedim(1, -1).reshape(-1, 8)
    torch.testing.assert_close(lfq.codebook[out.indices.reshape(-1)], flat_q)
    assert torch.equal(lfq.to_code_space(z), z.movedim(1, -1).reshape(-1, 8))
    assert set(out.losses) == set(TERMS)


def test_gradients_reach_the_input_straight_through():
    lfq = LFQ(10, 2**10)
    h = torch.randn(32, 10, requires_grad=True)
    lfq(h).quantized.sum().backward()
    assert torch.equal(h.grad, torch.ones_like(h))  # d z_q / d h = 1
    torch.manual_seed(0)
    proj = LFQ(16, 2**8)
    z = torch.randn(4, 20, 16, requires_grad=True)
    out = proj(z)
    (out.quantized.pow(2).sum() + out.loss).backward()
    assert torch.isfinite(z.grad).all() and z.grad.abs().sum() > 0
    assert proj.project_in.weight.grad.abs().sum() > 0


def test_entropy_loss_gradient_is_finite_when_probabilities_underflow():
    lfq = LFQ(12, 2**12)
    h = (torch.randn(64, 12) * 10).requires_grad_()  # logits ~4000: sigmoids underflow to 0
    out = lfq(h)
    out.loss.backward()
    assert torch.isfinite(out.loss) and torch.isfinite(h.grad).all()


def test_seeded_builds_and_forwards_are_bitwise_reproducible():
    def run() -> tuple[torch.Tensor, ...]:
        torch.manual_seed(5)
        lfq = LFQ(12, 2**10)
        out = lfq(torch.randn(3, 9, 12))
        return out.quantized, out.indices, out.loss

    for a, b in zip(run(), run()):
        assert torch.equal(a, b)


def test_init_fits_projections_and_is_a_no_op_without_them():
    torch.manual_seed(0)
    z = (torch.randn(2000, 4) @ torch.randn(4, 16)) * 5 + 3.0  # off-centre, 4-dim subspace
    lfq = LFQ(16, 2**4)
    before = ((lfq(z).quantized - z) ** 2).mean()
    lfq.init_from_data(z)
    out = lfq(z)
    assert bool(lfq.initialized) and ((out.quantized - z) ** 2).mean() < 0.5 * before
    # principal axes through the mean: every bit splits the data roughly in half
    bits = (lfq.project_in(z) > 0).float().mean(0)
    assert ((bits - 0.5).abs() < 0.1).all()
    plain = LFQ(4, 2**4)
    plain.init_from_data(torch.randn(10, 4), method="none")
    assert bool(plain.initialized) and plain.state_dict().keys() == {"initialized"}


def test_bad_arguments_and_empty_input():
    with pytest.raises(ValueError, match="power of 2"):
        LFQ(4, 1000)
    with pytest.raises(ValueError, match="codebook_scale"):
        LFQ(4, 16, codebook_scale=0.0)
    lfq = LFQ(4, 16)
    with pytest.raises(ValueError, match="indices must lie"):
        lfq.lookup(torch.tensor([16]))
    out = lfq(torch.randn(0, 4))
    assert out.quantized.shape == (0, 4) and out.indices.shape == (0,) and out.loss.item() == 0
