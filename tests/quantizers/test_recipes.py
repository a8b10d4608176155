"""The VectorQuantizer recipes: rotation trick, cosine codes, code projection, SimVQ, presets."""

import math

import pytest
import torch
import torch.nn.functional as F

from vqlab.config import ConfigError, ModelConfig, VQConfig, load_config, save_config
from vqlab.models.registry import build_model
from vqlab.quantizers.rotation import rotate_to, rotation_trick, straight_through
from vqlab.quantizers.vq import VectorQuantizer

D, K = 6, 16

OPTIONS = {
    "ste": {},
    "rotation": {"estimator": "rotation"},
    "normalize_ema": {"normalize": True, "dead_code_threshold": 0.5},
    "normalize_grad": {"normalize": True, "update": "grad", "dead_code_threshold": 0.5},
    "code_dim_ema": {"code_dim": 3, "dead_code_threshold": 0.5},
    "code_dim_grad_normalize_rotation": {
        "code_dim": 3,
        "update": "grad",
        "normalize": True,
        "estimator": "rotation",
    },
    "simvq": {"simvq": True, "update": "grad"},
    "simvq_normalize_code_dim": {"simvq": True, "update": "grad", "normalize": True, "code_dim": 4},
}


def make(seed: int = 0, **kwargs) -> VectorQuantizer:
    torch.manual_seed(seed)
    return VectorQuantizer(D, K, **kwargs)


def train_steps(vq: VectorQuantizer, steps: int = 5, seed: int = 0) -> torch.nn.Linear:
    """A few optimizer steps of a linear encoder + quantizer; returns the encoder."""
    torch.manual_seed(seed)
    enc = torch.nn.Linear(4, D)
    opt = torch.optim.SGD([*enc.parameters(), *vq.parameters()], lr=0.1)
    vq.train()
    for _ in range(steps):
        x = torch.randn(64, 4)
        out = vq(enc(x))
        target = torch.randn(64, D)
        loss = F.mse_loss(out.quantized, target) + out.loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    return enc


def rot2(angle: float) -> torch.Tensor:
    c, s = math.cos(angle), math.sin(angle)
    return torch.tensor([[c, -s], [s, c]])


# ------------------------------------------------------------------ rotation trick
def test_rotation_trick_value_is_q():
    g = torch.Generator().manual_seed(0)
    e, q = torch.randn(50, 7, generator=g), torch.randn(50, 7, generator=g) * 3
    assert torch.allclose(rotate_to(e, q), q, atol=1e-5)
    assert torch.equal(rotation_trick(e.requires_grad_(), q), q)
    assert torch.equal(straight_through(e, q), q)


def test_rotation_gradient_2d_matches_hand_formula():
    # e at angle a with length 2, q at angle b with length 3: R is the 2-D rotation by b - a,
    # lam = 3/2, so dL/de = lam * R^T dL/dq
    a, b = 0.3, 1.4
    e = (2.0 * torch.tensor([[math.cos(a), math.sin(a)]])).requires_grad_()
    q = 3.0 * torch.tensor([[math.cos(b), math.sin(b)]])
    upstream = torch.tensor([[1.0, -2.0]])
    (rotation_trick(e, q) * upstream).sum().backward()
    expected = 1.5 * upstream @ rot2(b - a)  # row-vector form of lam R^T g
    assert torch.allclose(e.grad, expected, atol=1e-6)
    # the Jacobian autograd sees is lam R (lam and R are constants, so the map is linear in e)
    jac = torch.autograd.functional.jacobian(lambda x: rotate_to(x, q), e.detach())[0, :, 0, :]
    assert torch.allclose(jac, 1.5 * rot2(b - a), atol=1e-6)
    # and the straight-through gradient would have been the upstream gradient itself
    assert not torch.allclose(e.grad, upstream, atol=1e-3)


def test_rotation_jacobian_is_a_proper_rotation_in_the_plane_of_e_and_q():
    g = torch.Generator().manual_seed(1)
    e, q = torch.randn(1, 5, generator=g), torch.randn(1, 5, generator=g)
    jac = torch.autograd.functional.jacobian(lambda x: rotate_to(x, q), e)[0, :, 0, :]  # (5, 5)
    lam = (q.norm() / e.norm()).item()
    r = jac / lam
    assert torch.allclose(r.T @ r, torch.eye(5), atol=1e-5)
    assert torch.linalg.det(r).item() == pytest.approx(1.0, abs=1e-5)
    assert torch.allclose(r @ F.normalize(e, dim=1)[0], F.normalize(q, dim=1)[0], atol=1e-5)
    # a vector orthogonal to both e and q is left alone
    basis = torch.linalg.qr(torch.cat([e, q, torch.randn(1, 5, generator=g)]).T)[0]
    other = basis[:, 2]
    assert torch.allclose(r @ other, other, atol=1e-5)


def test_rotation_degenerate_rows_fall_back_to_straight_through():
    e = torch.tensor([[1.0, 2.0], [0.0, 0.0], [1.0, 0.0]], requires_grad=True)
    q = torch.tensor([[-1.0, -2.0], [1.0, 1.0], [0.0, 0.0]])  # opposite, e = 0, q = 0
    out = rotation_trick(e, q)
    assert torch.equal(out, q)
    out.sum().backward()
    assert torch.equal(e.grad, torch.ones_like(e))


def test_rotation_estimator_in_quantizer_same_value_different_gradient():
    z = torch.randn(40, D)
    outs, grads = {}, {}
    for estimator in ("ste", "rotation"):
        vq = make(3, estimator=estimator).eval()
        zz = z.clone().requires_grad_()
        out = vq(zz)
        (out.quantized * torch.arange(D)).sum().backward()
        outs[estimator], grads[estimator] = out, zz.grad
    assert torch.equal(outs["ste"].indices, outs["rotation"].indices)
    assert torch.allclose(outs["ste"].quantized, outs["rotation"].quantized)
    assert not torch.allclose(grads["ste"], grads["rotation"])
    # gradient norm of each row scales by ||z_q|| / ||z_e|| (rotations keep norms)
    q = outs["rotation"].quantized
    ratio = grads["rotation"].norm(dim=1) / grads["ste"].norm(dim=1)
    assert torch.allclose(ratio, q.norm(dim=1) / z.norm(dim=1), rtol=1e-4)


# ------------------------------------------------------------------ cosine codes
@pytest.mark.parametrize("update", ["ema", "grad"])
def test_normalize_keeps_unit_codes_and_searches_by_cosine(update):
    vq = make(0, normalize=True, update=update, dead_code_threshold=0.5)
    before = vq.codebook.detach().clone()
    enc = train_steps(vq, steps=8)
    cb = vq.codebook.detach()
    assert not torch.allclose(cb, before)  # the codes moved
    assert torch.allclose(cb.norm(dim=1), torch.ones(K), atol=1e-5)
    if update == "grad":  # the optimizer moves raw vectors; `codebook` is them normalised
        assert "codebook_raw" in dict(vq.named_parameters())
        assert torch.equal(cb, F.normalize(vq.codebook_raw.detach(), dim=1))
    vq.eval()
    z = enc(torch.randn(100, 4)).detach() * 5  # the scale of z_e does not matter
    out = vq(z)
    cos = F.normalize(z, dim=1) @ cb.T  # (N, K)
    assert torch.equal(out.indices, cos.argmax(1))
    assert torch.allclose(out.quantized.norm(dim=1), torch.ones(100), atol=1e-5)


@pytest.mark.parametrize("update", ["ema", "grad"])
def test_normalize_restart_reseeds_unit_codes_from_the_search_space(update):
    vq = make(0, normalize=True, update=update, dead_code_threshold=0.5, code_dim=3)
    vq.ema_counts.fill_(0.1)  # every code looks dead
    z = torch.randn(32, D) * 4
    vq(z)
    assert int(vq.restarts) == K
    h = vq.to_code_space(z).detach()  # (32, 3) unit vectors
    cb = vq.codebook.detach()
    exact = torch.cdist(cb, h, compute_mode="donot_use_mm_for_euclid_dist")
    assert exact.min(1).values.max() < 1e-5  # each code is one of the batch's h
    assert torch.allclose(cb.norm(dim=1), torch.ones(K), atol=1e-5)


# ------------------------------------------------------------------ code projection
@pytest.mark.parametrize("update", ["ema", "grad"])
def test_code_dim_projects_and_trains_projections(update):
    vq = make(0, code_dim=3, update=update)
    assert vq.codebook.shape == (K, 3) and vq.code_dim == 3
    z = torch.randn(2, D, 5).requires_grad_()
    vq.channel_dim = 1
    out = vq(z)
    assert out.quantized.shape == z.shape and out.indices.shape == (2, 5)
    (out.quantized.pow(2).sum() + out.loss).backward()
    for lin in (vq.project_in, vq.project_out):
        assert lin.weight.grad is not None and lin.weight.grad.abs().sum() > 0
    assert z.grad is not None and z.grad.abs().sum() > 0
    h = vq.to_code_space(z.detach())  # (10, 3): the space of the search
    ref = torch.cdist(h, vq.codebook.detach()).argmin(1)
    assert torch.equal(out.indices.reshape(-1), ref)


def test_init_from_data_fits_projections_by_pca_then_clusters_in_code_space():
    vq = make(0, code_dim=2)
    # K well-separated centres on a 2-D plane of R^6, offset from the origin
    plane = torch.linalg.qr(torch.randn(D, 2))[0].T  # (2, D), orthonormal rows
    centres = torch.randn(K, 2) * 10 @ plane + 3.0  # (K, D)
    data = centres.repeat_interleave(20, 0) + 0.01 * torch.randn(20 * K, D)
    vq.init_from_data(data, iters=10)
    with torch.no_grad():
        # the out-projection inverts the in-projection on the data's plane (rank-2 PCA)
        round_trip = vq.project_out(vq.project_in(centres))
        assert torch.allclose(round_trip, centres, atol=0.05)
        projected = vq.project_in(centres)  # (K, 2)
    assert torch.cdist(projected, vq.codebook).min(1).values.max() < 0.05
    vq.eval()
    assert torch.allclose(vq(centres).quantized, centres, atol=0.1)  # lossless at the start


# --------------------------------------------------------------------------- SimVQ
def test_simvq_trains_the_map_not_the_frozen_codebook():
    vq = make(0, simvq=True, update="grad")
    params, buffers = dict(vq.named_parameters()), dict(vq.named_buffers())
    assert "codebook_base" in buffers and "codebook_map.weight" in params
    assert "codebook" not in params and "codebook" not in buffers
    base, w = vq.codebook_base.clone(), vq.codebook_map.weight.detach().clone()
    assert torch.allclose(vq.codebook, base)  # W starts as the identity
    train_steps(vq, steps=5)
    assert torch.equal(vq.codebook_base, base)
    assert not torch.allclose(vq.codebook_map.weight, w)
    expected = vq.codebook_base @ vq.codebook_map.weight.T  # nn.Linear: C W with W = weight^T
    assert torch.allclose(vq.codebook, expected)


def test_simvq_init_from_data_sets_c_and_resets_w():
    vq = make(0, simvq=True, update="grad")
    with torch.no_grad():
        vq.codebook_map.weight.mul_(3.0)
    data = torch.randn(400, D)
    vq.init_from_data(data, iters=5, seed=2)
    plain = make(1, update="grad")
    plain.init_from_data(data, iters=5, seed=2)
    assert torch.allclose(vq.codebook, plain.codebook)
    assert torch.equal(vq.codebook_map.weight, torch.eye(D))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"simvq": True}, "simvq=True needs update='grad'"),
        ({"simvq": True, "update": "grad", "dead_code_threshold": 1.0}, "dead_code_threshold"),
        ({"estimator": "gumbel"}, "estimator='gumbel' is not valid"),
        ({"code_dim": -1}, "code_dim must be >= 0"),
    ],
)
def test_bad_combinations_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        VectorQuantizer(D, K, **kwargs)


# ------------------------------------------------------------------ every option
@pytest.mark.parametrize("name", list(OPTIONS))
def test_eval_quantized_equals_lookup(name):
    vq = make(0, **OPTIONS[name])
    train_steps(vq, steps=2)
    vq.eval()
    out = vq(torch.randn(3, 7, D))
    looked_up = vq.lookup(out.indices)
    assert out.quantized.shape == looked_up.shape == (3, 7, D)
    assert torch.allclose(out.quantized, looked_up, atol=1e-6)
    if "code_dim" not in OPTIONS[name]:
        assert torch.equal(out.quantized, looked_up)


@pytest.mark.parametrize("name", list(OPTIONS))
def test_state_dict_round_trip(name):
    vq = make(0, **OPTIONS[name])
    vq.init_from_data(torch.randn(200, D), iters=3)
    train_steps(vq, steps=3)
    other = make(5, **OPTIONS[name])
    other.load_state_dict(vq.state_dict())
    assert torch.equal(other.codebook, vq.codebook)
    vq.eval(), other.eval()
    z = torch.randn(30, D)
    a, b = vq(z), other(z)
    assert torch.equal(a.indices, b.indices) and torch.equal(a.quantized, b.quantized)


@pytest.mark.parametrize("name", list(OPTIONS))
def test_init_from_data_each_option(name):
    vq = make(0, **OPTIONS[name])
    vq.init_from_data(torch.randn(300, D) + 4.0, iters=3)
    assert bool(vq.initialized) and vq.codebook.shape == (K, vq.code_dim)
    if OPTIONS[name].get("normalize"):
        assert torch.allclose(vq.codebook.norm(dim=1), torch.ones(K), atol=1e-5)


# ------------------------------------------------------------------ config + registry
def test_config_round_trip_and_model_wiring(tmp_path):
    sets = ["vq.update=grad", "vq.estimator=rotation", "vq.normalize=true", "vq.code_dim=4"]
    cfg = load_config(None, [*sets, "vq.simvq=true", "model.latent_dim=8"])
    save_config(cfg, tmp_path / "c.yaml")
    assert load_config(tmp_path / "c.yaml") == cfg
    q = build_model(cfg.model, cfg.vq, (5,)).quantizer
    assert (q.estimator, q.normalize, q.code_dim, q.simvq) == ("rotation", True, 4, True)
    assert q.codebook.shape == (cfg.vq.codebook_size, 4) and q.dim == 8
    plain = build_model(ModelConfig(), VQConfig(), (5,)).quantizer
    assert (plain.estimator, plain.normalize, plain.simvq) == ("ste", False, False)
    assert plain.code_dim == plain.dim and plain.project_in is None
    assert "codebook" in dict(plain.named_buffers())


def test_recipe_fills_defaults_and_explicit_values_win(tmp_path):
    assert VQConfig().dead_code_threshold == 0.0
    best = load_config(None, ["vq.recipe=best"])
    # the measured winner: SimVQ (which needs gradient-trained codes) under deferred quantization
    assert best.vq.simvq and best.vq.update == "grad" and best.train.strategy == "deferred"
    assert best.vq.dead_code_threshold == 0.0
    mine = load_config(None, ["vq.recipe=best", "vq.code_dim=8", "train.steps=100",
                              "train.pretrain_steps=40"])  # fmt: skip
    assert mine.vq.simvq and mine.vq.code_dim == 8 and mine.train.strategy == "deferred"
    assert mine.train.steps == 100 and mine.train.pretrain_steps == 40
    assert load_config(None, ["vq.recipe=none"]).train.strategy == "standard"
    save_config(best, tmp_path / "b.yaml")
    assert load_config(tmp_path / "b.yaml") == best


@pytest.mark.parametrize(
    "sets, message",
    [
        (["vq.estimator=gumbel"], r"vq.estimator='gumbel' is not valid; choose one of"),
        (["vq.code_dim=-2"], "vq.code_dim must be >= 0"),
        (["vq.simvq=true"], "vq.simvq=true needs vq.update=grad"),
        (["vq.simvq=true", "vq.update=grad", "vq.dead_code_threshold=1"], "dead_code_threshold=0"),
        (["vq.recipe=best", "vq.dead_code_threshold=1"], "set vq.dead_code_threshold=0"),
        (["vq.recipe=magic"], r"vq.recipe='magic' is not valid; choose one of \['none', 'best'\]"),
        (["vq.normalize=maybe"], "expects a bool"),
        (["vq.search=bf16"], r"vq.search='bf16' is not valid; choose one of \['exact', 'fast'\]"),
    ],
)
def test_config_refuses_bad_values(sets, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, sets)
