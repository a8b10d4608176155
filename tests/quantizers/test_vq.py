import pytest
import torch

from vqlab.quantizers.vq import VectorQuantizer, fit_codes


def hand_vq(update: str = "ema") -> VectorQuantizer:
    """A 4-code, D=5 codebook whose nearest codes are easy to compute by hand."""
    vq = VectorQuantizer(5, 4, update=update, beta=0.25)
    codes = torch.tensor(
        [
            [0.0, 0.0, 0.0, 0.0, 0.0],
            [1.0, 1.0, 1.0, 1.0, 1.0],
            [-2.0, 0.0, 0.0, 0.0, 0.0],
            [0.0, 0.0, 0.0, 0.0, 3.0],
        ]
    )
    vq.codebook.data.copy_(codes)
    return vq


def test_hand_fixture_indices_and_losses():
    vq = hand_vq().eval()
    z = torch.tensor(
        [
            [0.1, 0.0, 0.0, 0.0, 0.0],  # -> 0
            [0.9, 1.0, 1.2, 1.0, 1.0],  # -> 1
            [-1.5, 0.0, 0.0, 0.0, 0.0],  # -> 2
            [0.0, 0.0, 0.0, 0.0, 2.0],  # -> 3
        ]
    )
    out = vq(z)
    assert out.indices.tolist() == [0, 1, 2, 3]
    assert torch.equal(out.quantized, vq.codebook[out.indices])
    # squared errors: 0.01, 0.01+0.04, 0.25, 1.0 over 20 elements
    commit = (0.01 + 0.05 + 0.25 + 1.0) / 20
    assert out.losses["commitment"].item() == pytest.approx(commit)
    assert out.loss.item() == pytest.approx(0.25 * commit)
    assert set(out.losses) == {"commitment"}


def test_channel_first_input_and_lookup():
    vq = hand_vq().eval()
    vq.channel_dim = 1
    z = torch.randn(2, 5, 3, 4)  # (B, D, H, W)
    out = vq(z)
    assert out.quantized.shape == z.shape and out.indices.shape == (2, 3, 4)
    assert torch.equal(out.quantized, vq.lookup(out.indices))
    flat = z.permute(0, 2, 3, 1).reshape(-1, 5)
    ref = torch.cdist(flat, vq.codebook).argmin(1).reshape(2, 3, 4)
    assert torch.equal(out.indices, ref)


def test_eval_quantized_equals_lookup_exactly():
    torch.manual_seed(0)
    vq = VectorQuantizer(8, 32).eval()
    z = torch.randn(3, 7, 8)
    out = vq(z)
    assert torch.equal(out.quantized, vq.lookup(out.indices))


def test_ema_mode_codebook_gets_no_gradient_but_moves_encoder_gets_gradient():
    torch.manual_seed(0)
    vq = VectorQuantizer(4, 8, update="ema")
    assert "codebook" not in dict(vq.named_parameters())
    assert "codebook" in dict(vq.named_buffers())
    enc = torch.nn.Linear(3, 4)
    before = vq.codebook.clone()
    out = vq(enc(torch.randn(64, 3)))
    (out.quantized.pow(2).sum() + out.loss).backward()
    assert not vq.codebook.requires_grad
    assert not torch.equal(vq.codebook, before)  # EMA moved the used codes
    assert enc.weight.grad is not None and enc.weight.grad.abs().sum() > 0


def test_grad_mode_codebook_is_a_parameter_and_gets_gradient():
    torch.manual_seed(0)
    vq = VectorQuantizer(4, 8, update="grad", beta=0.25)
    assert "codebook" in dict(vq.named_parameters())
    enc = torch.nn.Linear(3, 4)
    out = vq(enc(torch.randn(64, 3)))
    assert set(out.losses) == {"commitment", "codebook"}
    # codebook loss and commitment are the same squared error, split by the stop-gradient
    assert torch.isclose(out.losses["codebook"], out.losses["commitment"])
    out.loss.backward()
    assert vq.codebook.grad is not None and vq.codebook.grad.abs().sum() > 0
    assert enc.weight.grad is not None and enc.weight.grad.abs().sum() > 0


def test_beta_weights_the_commitment_term_only():
    # taming's known bug put beta on the codebook term; here d(loss)/d(z_e) = beta * 2(z_e-z_q)/n
    vq = hand_vq(update="grad").eval()
    z = torch.tensor([[0.5, 0.0, 0.0, 0.0, 0.0]], requires_grad=True)
    out = vq(z)
    out.loss.backward()
    expected = 0.25 * 2 * (z.detach() - vq.codebook[0].detach()) / 5
    assert torch.allclose(z.grad, expected)


def test_straight_through_gradient_is_identity():
    vq = hand_vq()
    z = torch.tensor([[0.3, 0.1, 0.0, 0.0, 0.0]], requires_grad=True)
    out = vq(z)
    out.quantized.sum().backward()
    assert torch.equal(z.grad, torch.ones_like(z))


def test_state_survives_state_dict():
    torch.manual_seed(0)
    vq = VectorQuantizer(4, 16)
    vq.init_from_data(torch.randn(200, 4), iters=3)
    vq(torch.randn(50, 4))
    other = VectorQuantizer(4, 16)
    assert not bool(other.initialized)
    other.load_state_dict(vq.state_dict())
    assert bool(other.initialized)
    for name in ("codebook", "ema_counts", "ema_sums"):
        assert torch.equal(getattr(other, name), getattr(vq, name))


@pytest.mark.parametrize(
    "method", ["kmeans", "kmeans++", "random_normal", "random_uniform", "sample"]
)
def test_init_from_data_methods(method):
    torch.manual_seed(0)
    data = torch.randn(500, 3) * 2 + 5
    vq = VectorQuantizer(3, 20)
    vq.init_from_data(data, method=method, iters=5, seed=1)
    assert bool(vq.initialized) and torch.isfinite(vq.codebook).all()
    lo, hi = data.min(0).values, data.max(0).values
    # codes follow the data (mean 5, std 2), not the N(0, 1) they were created with
    centre = (lo + hi) / 2 if method == "random_uniform" else data.mean(0)
    assert (vq.codebook.mean(0) - centre).abs().max() < 1.5
    if method != "random_normal":
        assert ((vq.codebook >= lo - 1e-5) & (vq.codebook <= hi + 1e-5)).all()
    again = VectorQuantizer(3, 20)
    again.init_from_data(data, method=method, iters=5, seed=1)
    assert torch.equal(again.codebook, vq.codebook)  # seeded


def test_fit_codes_random_normal_has_the_datas_spread_per_dimension():
    # dimensions of very different scales: each code dimension must take its own std and mean
    g = torch.Generator().manual_seed(0)
    mean, std = torch.tensor([3.0, -2.0, 10.0]), torch.tensor([1.0, 5.0, 0.2])
    data = mean + std * torch.randn(4000, 3, generator=g)
    codes = fit_codes(data, 4000, "random_normal", seed=1)
    assert codes.shape == (4000, 3)
    torch.testing.assert_close(codes.std(0), data.std(0), rtol=0.05, atol=0)
    assert ((codes.mean(0) - data.mean(0)).abs() < 0.1 * data.std(0)).all()


def test_fit_codes_sample_draws_distinct_rows_of_the_data():
    data = torch.arange(100.0).reshape(50, 2)  # 50 distinct rows
    codes = fit_codes(data, 30, "sample", seed=4)
    rows = {tuple(r) for r in data.tolist()}
    assert len({tuple(r) for r in codes.tolist()}) == 30  # no row drawn twice
    assert all(tuple(r) in rows for r in codes.tolist())
    # K = N draws every row once: the codes are the data, shuffled, with its exact spread
    every = fit_codes(data, 50, "sample", seed=4)
    assert sorted(map(tuple, every.tolist())) == sorted(rows)
    torch.testing.assert_close(every.std(0), data.std(0))
    assert not torch.equal(every, data)  # shuffled, not the first K rows


def test_init_kmeans_places_codes_on_clusters():
    centres = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    data = centres.repeat_interleave(50, 0) + 0.01 * torch.randn(150, 2)
    vq = VectorQuantizer(2, 3)
    vq.init_from_data(data, iters=10)
    found = vq.codebook[torch.cdist(centres, vq.codebook).argmin(1)]
    assert torch.allclose(found, centres, atol=0.05)


def test_init_needs_enough_points_and_known_method():
    vq = VectorQuantizer(2, 10)
    with pytest.raises(ValueError, match="at least codebook_size=10"):
        vq.init_from_data(torch.randn(5, 2))
    with pytest.raises(ValueError, match="unknown init method"):
        vq.init_from_data(torch.randn(50, 2), method="magic")


def test_dead_code_restart_reseeds_unused_codes():
    torch.manual_seed(0)
    vq = VectorQuantizer(2, 8, dead_code_threshold=0.5)
    vq.codebook.data.copy_(torch.full((8, 2), 100.0))  # far from the data: all dead but one
    vq.codebook.data[0] = 0.0
    vq.ema_counts.fill_(0.1)
    vq.ema_sums.copy_(vq.codebook * 0.1)
    z = torch.randn(32, 2)
    vq(z)
    assert int(vq.restarts) >= 7
    # every re-seeded code now sits on one of the batch's encoder outputs
    d = torch.cdist(vq.codebook[1:], z).min(1).values
    assert (d < 1e-5).all()
    assert (vq.ema_counts[1:] == 0.5).all()


def test_restart_reseeds_distinct_rows_and_defers_the_dead_codes_a_batch_cannot_fill():
    """More dead codes than batch rows (K=16384 against a 4096-row batch): each step re-seeds
    as many dead codes as the batch has rows, each with a different row, and the rest at the
    next steps. Rows drawn with replacement gave duplicate codes, which can never win the search
    (ties go to the lower index), so at K=16384 only ~1/4 of the codes were ever used."""
    torch.manual_seed(0)
    k, n = 64, 16
    vq = VectorQuantizer(2, k, dead_code_threshold=0.5)
    vq.codebook.data.copy_(torch.full((k, 2), 100.0))  # all dead
    vq.ema_counts.fill_(0.1)
    vq.ema_sums.copy_(vq.codebook * 0.1)
    far = torch.ones(k, dtype=torch.bool)  # codes still at the far point
    for step in range(1, 4):
        z = torch.randn(n, 2)
        vq(z)
        assert int(vq.restarts) == n * step  # one code per row, no more
        on_row = torch.cdist(vq.codebook, z).min(1).values < 1e-5  # (k,) codes on this batch
        assert int(on_row.sum()) == n  # as many as the rows, so each row exactly once
        assert torch.cdist(z, vq.codebook[on_row]).min(1).values.max() < 1e-5
        far &= ~on_row
    assert int(far.sum()) < k - n  # later steps reached codes the first could not


def test_no_restart_when_off():
    vq = VectorQuantizer(2, 8)
    vq.codebook.data.copy_(torch.full((8, 2), 100.0))
    vq(torch.randn(32, 2))
    assert int(vq.restarts) == 0


def test_runs_in_fp32_under_autocast():
    vq = VectorQuantizer(4, 16)
    z = torch.randn(10, 4, dtype=torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = vq(z)
    assert out.quantized.dtype == torch.bfloat16
    assert out.loss.dtype == torch.float32
    ref = torch.cdist(z.float(), vq.codebook).argmin(1)
    assert torch.equal(out.indices, ref)


def test_large_codebook_on_cpu_without_n_by_k_matrix():
    # K=131,072 codes x N=2,048 rows would be 1 GiB of fp32 distances; the budget here is 4 MiB
    torch.manual_seed(0)
    vq = VectorQuantizer(8, 131072, max_bytes=4 * 2**20).eval()
    z = torch.randn(2048, 8)
    out = vq(z)
    sub = torch.randint(0, 2048, (64,))
    ref = torch.cdist(z[sub], vq.codebook).argmin(1)
    assert torch.equal(out.indices[sub], ref)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"update": "sgd"}, "update='sgd' is not valid"),
        ({"decay": 1.0}, "decay must lie"),
        ({"search": "bf16"}, "search='bf16' is not valid"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        VectorQuantizer(4, 8, **kwargs)


def test_bad_inputs():
    vq = VectorQuantizer(4, 8)
    with pytest.raises(ValueError, match="expected D=4"):
        vq(torch.randn(3, 5))
    with pytest.raises(TypeError, match="floating-point"):
        vq(torch.ones(3, 4, dtype=torch.long))


def test_search_switch_reaches_nearest_code(monkeypatch):
    """vq.search is the precision the layer's search asks for; on the CPU both give the fp32
    codes. The config key reaches the layer through build_model."""
    import vqlab.quantizers.vq as vq_module
    from vqlab.config import load_config
    from vqlab.models.registry import build_model

    asked = []
    real = vq_module.nearest_code

    def spy(*args, **kwargs):
        asked.append(kwargs.get("precision"))
        return real(*args, **kwargs)

    monkeypatch.setattr(vq_module, "nearest_code", spy)
    z = torch.randn(50, 4, generator=torch.Generator().manual_seed(0))
    exact = VectorQuantizer(4, 16).eval()
    fast = VectorQuantizer(4, 16, search="fast").eval()
    fast.load_state_dict(exact.state_dict())
    assert torch.equal(exact(z).indices, fast(z).indices)
    assert asked == ["exact", "fast"]
    cfg = load_config(None, ["vq.search=fast", "model.latent_dim=4", "vq.codebook_size=16"])
    assert build_model(cfg.model, cfg.vq, (8,)).quantizer.search == "fast"
