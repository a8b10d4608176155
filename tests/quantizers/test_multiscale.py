import pytest
import torch
import torch.nn.functional as F

from vqlab.quantizers.multiscale import MultiScaleQuantizer, Phi, area, bicubic, phi_choice
from vqlab.quantizers.vq import VectorQuantizer

SCALES = (1, 2, 3, 4, 6, 8)  # minVAR's CIFAR-10 scales, L = 130


def make(update: str = "ema", scales=SCALES, dim: int = 4, k: int = 16, **kw):
    torch.manual_seed(0)
    return MultiScaleQuantizer(dim, k, scales, update=update, **kw)


def latent(b: int = 3, dim: int = 4, h: int = 8, seed: int = 1) -> torch.Tensor:
    return torch.randn(b, dim, h, h, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("update", ["ema", "grad"])
def test_single_scale_without_phi_is_the_vector_quantizer(update):
    ms = make(update, scales=(4,), quant_resi=0.0)
    vq = VectorQuantizer(4, 16, update=update, channel_dim=1)
    vq.codebook.data.copy_(ms.codebook)
    if update == "ema":
        vq.ema_sums.copy_(ms.ema_sums)
    for step in range(3):  # EMA moves both codebooks; they must stay together
        z = latent(h=4, seed=step).requires_grad_(True)
        z2 = z.detach().clone().requires_grad_(True)
        a, b = ms(z), vq(z2)
        assert torch.equal(a.indices, b.indices.reshape(3, -1))
        assert torch.equal(a.quantized, b.quantized)
        assert set(a.losses) == set(b.losses)
        torch.testing.assert_close(a.loss, b.loss, rtol=1e-6, atol=0)
        (a.quantized.square().sum() + a.loss).backward()
        (b.quantized.square().sum() + b.loss).backward()
        torch.testing.assert_close(z.grad, z2.grad)
        torch.testing.assert_close(ms.codebook, vq.codebook, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("update", ["ema", "grad"])
def test_contributions_sum_to_quantized_and_lookup_rebuilds_it_exactly(update):
    ms = make(update).eval()
    out = ms(latent())
    total = out.contributions[0]
    for c in out.contributions[1:]:
        total = total + c
    assert torch.equal(total, out.quantized)
    assert torch.equal(ms.lookup(out.indices), out.quantized)
    # indices are the levels concatenated coarse to fine, row-major within each scale
    assert out.indices.shape == (3, sum(p * p for p in SCALES))
    assert [lv.shape[1:] for lv in out.level_indices] == [(p, p) for p in SCALES]
    assert all(torch.equal(a, b) for a, b in zip(ms.split_indices(out.indices), out.level_indices))


@pytest.mark.parametrize("quant_resi", [0.0, 0.5])
def test_each_scale_quantizes_the_downsampled_residual(quant_resi):
    ms = make("grad", quant_resi=quant_resi).eval()
    z = latent()
    out = ms(z)
    rest = z
    for k, p in enumerate(SCALES):
        small = F.adaptive_avg_pool2d(rest, p) if p < 8 else rest  # "area" is adaptive pooling
        flat = small.permute(0, 2, 3, 1).reshape(-1, 4)
        ref = torch.cdist(flat, ms.codebook).argmin(1)
        assert torch.equal(out.level_indices[k].reshape(-1), ref)
        codes = ms.codebook[out.level_indices[k]].permute(0, 3, 1, 2)  # (B, D, p, p)
        up = F.interpolate(codes, size=(8, 8), mode="bicubic") if p < 8 else codes
        if quant_resi:  # phi_k(x) = (1 - r) x + r conv(x)
            conv = ms.phis[ms.phi_index[k]].conv
            up = (1 - quant_resi) * up + quant_resi * conv(up)
        torch.testing.assert_close(out.contributions[k], up)
        rest = rest - out.contributions[k]


@pytest.mark.parametrize("update", ["ema", "grad"])
def test_gradients_reach_encoder_and_codebook_only_in_grad_mode(update):
    ms = make(update).train()
    before = ms.codebook.detach().clone()
    z = latent().requires_grad_(True)
    out = ms(z)
    (out.quantized.square().mean() + out.loss).backward()
    assert z.grad is not None and z.grad.abs().sum() > 0
    conv = next(m for m in ms.phis if isinstance(m, Phi)).conv
    assert conv.weight.grad is not None and conv.weight.grad.abs().sum() > 0  # phi learns
    if update == "grad":
        assert ms.codebook.grad is not None and ms.codebook.grad.abs().sum() > 0
    else:
        assert not ms.codebook.requires_grad and ms.codebook.grad is None
        assert not torch.equal(ms.codebook, before)  # the EMA moved it in the forward
        moved = ms.codebook.clone()
        ms.eval()(z)
        assert torch.equal(ms.codebook, moved)  # eval never updates


def hand_layer(update: str = "grad") -> MultiScaleQuantizer:
    """K = 2 codes (0, 0) and (4, 0); scales (1, 2); phi the identity."""
    ms = MultiScaleQuantizer(2, 2, (1, 2), update=update, quant_resi=0.0)
    ms.codebook.data.copy_(torch.tensor([[0.0, 0.0], [4.0, 0.0]]))
    return ms


def test_per_scale_counts_by_hand():
    ms = hand_layer().train()
    z = torch.zeros(1, 2, 2, 2)
    z[0, 0] = torch.tensor([[4.0, 4.0], [8.0, 0.0]])
    out = ms(z)
    # scale 1: the mean (4, 0) -> code 1, upsampled to 4 everywhere; the residual
    # [[0, 0], [4, -4]] then picks codes 0, 0, 1, 0 at scale 2
    assert out.indices.tolist() == [[1, 0, 0, 1, 0]]
    counts = ms.per_scale_counts(out.level_indices)
    assert counts.tolist() == [[0, 1], [3, 1]]
    assert out.quantized[0, 0].tolist() == [[4.0, 4.0], [8.0, 4.0]]
    torch.testing.assert_close(ms.scale_counts, counts.float() * (1 - ms.decay))
    # every_scale: mean of the squared errors of f_hat_1 and f_hat_2 = mean(z - quantized)^2
    f1 = out.contributions[0]
    commit = (F.mse_loss(z, f1) + F.mse_loss(z, out.quantized)) / 2
    torch.testing.assert_close(out.losses["commitment"], commit)
    final = MultiScaleQuantizer(2, 2, (1, 2), update="grad", quant_resi=0.0, loss_on="final")
    final.codebook.data.copy_(ms.codebook)
    torch.testing.assert_close(final(z).losses["commitment"], F.mse_loss(z, out.quantized))


def test_ema_pools_the_assignments_of_every_scale():
    ms = hand_layer("ema").train()
    sums_before = ms.ema_sums.clone()
    z = torch.zeros(1, 2, 2, 2)
    z[0, 0] = torch.tensor([[4.0, 4.0], [8.0, 0.0]])
    ms(z)
    # code 0: three residuals (0,0),(0,0),(-4,0); code 1: the mean (4,0) and residual (4,0)
    d = ms.decay
    expect_counts = torch.ones(2) * d + torch.tensor([3.0, 2.0]) * (1 - d)
    expect_sums = sums_before * d + torch.tensor([[-4.0, 0.0], [8.0, 0.0]]) * (1 - d)
    torch.testing.assert_close(ms.ema_counts, expect_counts)
    torch.testing.assert_close(ms.ema_sums, expect_sums)


def test_phi_sharing_follows_var():
    # VAR's PhiPartiallyShared: ticks linspace(1/12, 11/12, 4), scale k at k / 9
    assert phi_choice(10, 4) == [0, 0, 1, 1, 1, 2, 2, 3, 3, 3]
    # ... and linspace(1/(2n), 1 - 1/(2n), n) for n != 4 (1/(3n) would give conv 1 at k = 3)
    assert phi_choice(10, 3) == [0, 0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert phi_choice(10, 1) == [0] * 10
    assert phi_choice(6, 6) == list(range(6))  # one per scale
    assert phi_choice(1, 4) == [0]
    ms = make(scales=(1, 2, 3, 4, 5, 6, 8, 10, 13, 16), share_resi=4)
    assert len(ms.phis) == 4 and ms.phi_index == [0, 0, 1, 1, 1, 2, 2, 3, 3, 3]
    small = make(scales=(1, 2, 4), share_resi=4)  # only the convs some scale uses are built
    assert len(small.phis) == len(set(phi_choice(3, 4)))
    assert all(isinstance(m, torch.nn.Identity) for m in make(quant_resi=0.0).phis)


def test_area_and_bicubic_shapes_and_meaning():
    z = latent()
    for p in SCALES:
        assert area(z, p).shape == (3, 4, p, p)
        assert bicubic(area(z, p), 8).shape == (3, 4, 8, 8)
    assert area(z, 8) is z and bicubic(z, 8) is z  # no resize at full resolution
    torch.testing.assert_close(area(z, 4), F.avg_pool2d(z, 2))
    torch.testing.assert_close(area(z, 1), z.mean((2, 3), keepdim=True))
    const = torch.full((1, 4, 2, 2), 3.0)
    torch.testing.assert_close(bicubic(const, 8), torch.full((1, 4, 8, 8), 3.0))
    out = make()(z)
    assert all(c.shape == z.shape for c in out.contributions)


def test_next_scale_input_and_teacher_forcing():
    ms = make().eval()
    out = ms(latent())
    partial, inputs = out.contributions[0], []
    for k in range(1, len(SCALES)):
        nxt = ms.next_scale_input(partial, k)
        assert nxt.shape == (3, 4, SCALES[k], SCALES[k])
        inputs.append(nxt.flatten(2).transpose(1, 2))
        partial = partial + out.contributions[k]
    torch.testing.assert_close(ms.teacher_forcing_input(out.indices), torch.cat(inputs, 1))
    assert ms.teacher_forcing_input(out.indices).shape == (3, 130 - 1, 4)
    with pytest.raises(ValueError):
        ms.next_scale_input(partial, len(SCALES))


def test_to_code_space_pairs_with_indices():
    ms = make().eval()
    z = latent()
    searched = ms.to_code_space(z)
    assert searched.shape == (3 * 130, 4)
    ref = torch.cdist(searched, ms.codebook).argmin(1)
    assert torch.equal(ref, ms(z).indices.reshape(-1))
    single = make(scales=(8,), quant_resi=0.0)
    torch.testing.assert_close(single.to_code_space(z), z.permute(0, 2, 3, 1).reshape(-1, 4))


@pytest.mark.parametrize("how", ["finest", "pyramid", "coarse_then_all"])
@pytest.mark.parametrize("update", ["ema", "grad"])
def test_init_ways_fill_k_distinct_finite_codes(how, update):
    ms = make(update, k=32)
    z = latent(b=8)
    ms.init_from_latents(z, how=how, iters=5, seed=3)
    assert bool(ms.initialized)
    assert torch.isfinite(ms.codebook).all()
    assert torch.unique(ms.codebook, dim=0).shape[0] == 32
    if update == "ema":
        assert torch.equal(ms.ema_sums, ms.codebook) and torch.equal(ms.ema_counts, torch.ones(32))
    again = make(update, k=32)
    again.init_from_latents(z, how=how, iters=5, seed=3)
    assert torch.equal(again.codebook, ms.codebook)
    out = ms.eval()(z)
    assert torch.isfinite(out.quantized).all() and torch.isfinite(out.loss)


def test_init_from_data_takes_flattened_vectors():
    ms = make(k=32)
    flat = latent(b=8).permute(0, 2, 3, 1).reshape(-1, 4)
    ms.init_from_data(flat, method="kmeans", iters=5, seed=0)
    assert torch.unique(ms.codebook, dim=0).shape[0] == 32
    with pytest.raises(ValueError, match="init_from_latents"):
        ms.init_from_data(latent(b=8))
    with pytest.raises(ValueError, match="how"):
        ms.init_from_latents(latent(b=8), how="sideways")


@pytest.mark.parametrize("update", ["ema", "grad"])
def test_seeded_runs_are_bitwise_reproducible(update):
    results = []
    for _ in range(2):
        ms = make(update).train()
        outs = [ms(latent(seed=s)) for s in range(3)]
        results.append((outs[-1].quantized, outs[-1].indices, outs[-1].loss, ms.codebook.clone()))
    for a, b in zip(*results):
        assert torch.equal(a, b)


def test_channel_last_and_autocast():
    ms = make(channel_dim=-1).eval()
    z = latent()
    out = ms(z.permute(0, 2, 3, 1))
    ref = make().eval()(z)
    assert torch.equal(out.indices, ref.indices)
    assert torch.equal(out.quantized, ref.quantized.permute(0, 2, 3, 1))
    assert torch.equal(ms.lookup(out.indices), out.quantized)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert make().eval()(z).quantized.dtype == torch.float32


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="scales"):
        MultiScaleQuantizer(4, 8, (2, 1))
    with pytest.raises(ValueError, match="update"):
        MultiScaleQuantizer(4, 8, (1, 2), update="sgd")
    with pytest.raises(ValueError, match="share_resi"):
        MultiScaleQuantizer(4, 8, (1, 2), share_resi=0)
    ms = make()
    with pytest.raises(ValueError, match=r"\(B, D, 8, 8\)"):
        ms(torch.randn(2, 4, 6, 6))
    with pytest.raises(ValueError, match="indices"):
        ms.lookup(torch.zeros(2, 129, dtype=torch.long))
    with pytest.raises(ValueError, match="indices must lie"):
        ms.lookup(torch.full((2, 130), 16, dtype=torch.long))
