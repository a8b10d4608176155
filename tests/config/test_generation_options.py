"""The options of issue 22: ``vq.loss_on``, ``model.norm_groups`` and the per-prior defaults of
``prior.label_smoothing`` and ``sample.top_k`` / ``sample.top_p``."""

import pytest
import torch
import torch.nn.functional as F

from vqlab import load_config
from vqlab.config.generation import PRIOR_DEFAULTS
from vqlab.errors import ConfigError
from vqlab.models.conv import ConvEncoder, norm
from vqlab.models.registry import build_model

CONV = ["model.kind=conv", "model.width=16", "model.latent_dim=4", "vq.codebook_size=8"]


def test_loss_on_reaches_the_multiscale_layer_and_is_validated():
    base = [*CONV, "vq.kind=multiscale", "vq.scales=1,2,4"]
    for value in ("every_scale", "final"):
        cfg = load_config(None, [*base, f"vq.loss_on={value}"])
        assert build_model(cfg.model, cfg.vq, (3, 16, 16)).quantizer.loss_on == value
    assert load_config(None, base).vq.loss_on == "every_scale"  # VAR's, the committed runs'
    with pytest.raises(ConfigError, match=r"vq.loss_on='last' is not valid.*final"):
        load_config(None, [*base, "vq.loss_on=last"])
    with pytest.raises(ConfigError, match="multi-scale layer's"):
        load_config(None, [*CONV, "vq.loss_on=final"])  # single-scale: no scales to average


def test_loss_on_final_keeps_only_the_full_reconstruction():
    """Hand check of the two commitment terms on one latent: every_scale averages the distance
    to each running reconstruction, final takes the last one only."""
    cfg = load_config(None, [*CONV, "vq.kind=multiscale", "vq.scales=1,2,4", "vq.quant_resi=0"])
    q = build_model(cfg.model, cfg.vq, (3, 16, 16)).quantizer.eval()
    z = torch.randn(2, 4, 4, 4, generator=torch.Generator().manual_seed(0))
    parts = q(z).contributions
    running = [sum(parts[: k + 1]) for k in range(len(parts))]
    want = {
        "every_scale": sum(F.mse_loss(z, f) for f in running) / 3,
        "final": F.mse_loss(z, running[-1]),
    }
    for value, expected in want.items():
        q.loss_on = value
        torch.testing.assert_close(q(z).losses["commitment"], expected)


def _last_norm_groups(args):
    cfg = load_config(None, [*CONV, *args])
    return build_model(cfg.model, cfg.vq, (3, 16, 16)).encoder.norm_out.num_groups


def test_norm_groups_default_keeps_the_committed_models():
    # width 16, channel_mult 1,2,2: the last level has 32 channels. The default (32 groups)
    # is one channel per group, as every committed width-16 run was built
    assert _last_norm_groups([]) == 32
    assert _last_norm_groups(["model.norm_groups=8"]) == 8
    assert _last_norm_groups(["model.norm_groups=1"]) == 1
    assert _last_norm_groups(["model.width=64"]) == 32  # 128 channels: unchanged either way
    assert norm(48, 32).num_groups == 24 and norm(48, 8).num_groups == 8  # largest divisor
    with pytest.raises(ConfigError, match="model.norm_groups must be > 0"):
        load_config(None, [*CONV, "model.norm_groups=0"])
    with pytest.raises(ValueError, match="max_groups"):
        norm(8, 0)


def test_one_channel_per_group_removes_each_images_channel_mean():
    """Why 32 groups at 32 channels starve a 1x1 scale: the norm's output has zero spatial mean
    per image and channel (an InstanceNorm); with 8 groups the channel means survive."""
    x = torch.randn(3, 32, 8, 8) + torch.randn(3, 32, 1, 1) * 3  # per-image channel offsets
    inst, grouped = norm(32), norm(32, 8)
    assert inst.num_groups == 32
    assert inst(x).mean((2, 3)).abs().max() < 1e-5
    assert grouped(x).mean((2, 3)).abs().max() > 0.1
    enc = ConvEncoder(3, 16, (1, 2), 4, norm_groups=4)  # reaches every norm of the encoder
    groups = {m.num_groups for m in enc.modules() if isinstance(m, torch.nn.GroupNorm)}
    assert groups == {4}


def test_per_prior_defaults_and_explicit_values_win():
    for kind, want in PRIOR_DEFAULTS.items():
        cfg = load_config(None, [f"prior.kind={kind}"])
        assert cfg.prior.label_smoothing == want["label_smoothing"]
        assert (cfg.sample.top_k, cfg.sample.top_p) == (want["top_k"], want["top_p"])
    assert (PRIOR_DEFAULTS["var"]["top_k"], PRIOR_DEFAULTS["var"]["top_p"]) == (900, 0.96)
    assert {d["label_smoothing"] for d in PRIOR_DEFAULTS.values()} == {0.0}
    explicit = ["prior.kind=var", "prior.label_smoothing=0.1", "sample.top_k=0"]
    cfg = load_config(None, explicit)
    assert (cfg.prior.label_smoothing, cfg.sample.top_k, cfg.sample.top_p) == (0.1, 0, 0.96)
    cfg = load_config(None, ["prior.kind=var", "sample.top_p=none"])  # none: the default again
    assert cfg.sample.top_p == 0.96
    with pytest.raises(ConfigError, match="prior.label_smoothing must lie in"):
        load_config(None, ["prior.label_smoothing=1.0"])
    with pytest.raises(ConfigError, match="sample.top_p must lie in"):
        load_config(None, ["sample.top_p=1.5"])
