"""PerceptualLoss: hand values, metric properties, unit-normalisation, freezing; load_lpips.

The property tests use a small randomly initialised conv net: identity, symmetry, growth with
noise, scale invariance and frozen gradients are properties of the distance's form, not of
trained weights, so random features suffice (and no weights can be downloaded here).
"""

import sys
import types

import pytest
import torch
from torch import nn

from vqlab.errors import ConfigError
from vqlab.losses import LPIPSLoss, PerceptualLoss, load_lpips, unit_normalize


class TinyNet(nn.Module):
    """Three conv stages; BatchNorm and Dropout make any slip out of eval mode visible."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.stages = nn.ModuleList(
            [
                nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU()),
                nn.Sequential(nn.Conv2d(8, 16, 3, 2, 1), nn.Dropout(0.5), nn.ReLU()),
                nn.Sequential(nn.Conv2d(16, 16, 3, 2, 1), nn.ReLU()),
            ]
        )

    def feature_maps(self, x: torch.Tensor) -> list[torch.Tensor]:
        maps = []
        for stage in self.stages:
            x = stage(x)
            maps.append(x)
        return maps


class Maps(nn.Module):
    """feature_maps = [x, x[:, :1]]: the distance by hand."""

    def feature_maps(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [x, x[:, :1]]


class Scaled(nn.Module):
    """TinyNet's maps times a positive scale: per layer and position, or per channel."""

    def __init__(self, net: nn.Module, per_channel: bool = False) -> None:
        super().__init__()
        self.inner, self.per_channel = net, per_channel

    def feature_maps(self, x: torch.Tensor) -> list[torch.Tensor]:
        g = torch.Generator().manual_seed(1)
        out = []
        for f in self.inner.feature_maps(x):
            shape = (1, f.shape[1], 1, 1) if self.per_channel else (1, 1, *f.shape[2:])
            out.append(f * (0.1 + 10 * torch.rand(shape, generator=g)))
        return out


def images(n: int = 4, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, 16, 16, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_hand_value_sums_channels_and_averages_layers():
    x = torch.tensor([3.0, 4.0]).reshape(1, 2, 1, 1)  # unit (0.6, 0.8)
    y = torch.tensor([1.0, 0.0]).reshape(1, 2, 1, 1)  # unit (1, 0)
    # layer 0: 0.4² + 0.8² = 0.8; layer 1: one positive channel each, unit 1 and 1 -> 0
    assert PerceptualLoss(Maps())(x, y).item() == pytest.approx(0.4)
    assert PerceptualLoss(Maps(), layers=[0])(x, y).item() == pytest.approx(0.8)
    with pytest.raises(ValueError, match="valid indices 0..1"):
        PerceptualLoss(Maps(), layers=[2])(x, y)


def test_zero_for_identical_images_and_symmetric():
    loss = PerceptualLoss(TinyNet(), reduction="none")
    x, y = images(), images(seed=1)
    assert torch.equal(loss(x, x.clone()), torch.zeros(4))
    assert torch.equal(loss(x, y), loss(y, x))
    assert (loss(x, y) > 0).all()


def test_reduction():
    x, y = images(), images(seed=1)
    per_image = PerceptualLoss(TinyNet(), reduction="none")(x, y)
    assert per_image.shape == (4,)
    torch.testing.assert_close(PerceptualLoss(TinyNet())(x, y), per_image.mean())
    with pytest.raises(ValueError, match="mean"):
        PerceptualLoss(TinyNet(), reduction="sum")


def test_grows_with_the_noise_level():
    loss = PerceptualLoss(TinyNet())
    x = images(8)
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(2))
    d = [loss(x, x + s * noise).item() for s in (0.01, 0.03, 0.1, 0.3, 1.0)]
    assert all(a < b for a, b in zip(d, d[1:])), d


def test_invariant_to_a_positive_scale_per_position_but_not_per_channel():
    x, y = images(), images(seed=1)
    base = PerceptualLoss(TinyNet(), reduction="none")(x, y)
    scaled = PerceptualLoss(Scaled(TinyNet()), reduction="none")(x, y)
    torch.testing.assert_close(scaled, base)
    # the normalisation is over channels, so reweighting channels changes the direction
    per_channel = PerceptualLoss(Scaled(TinyNet(), per_channel=True), reduction="none")(x, y)
    assert not torch.allclose(per_channel, base, rtol=1e-2)


def test_gradients_reach_the_input_never_the_net():
    net = TinyNet()
    x = images().requires_grad_(True)
    PerceptualLoss(net)(x, images(seed=1)).backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    assert all(not p.requires_grad and p.grad is None for p in net.parameters())


def test_gradient_is_finite_at_an_all_zero_feature_vector():
    x = torch.zeros(1, 2, 2, 2)
    x[..., 0, 0] = torch.tensor([3.0, 4.0])  # three of four positions are all-zero
    x.requires_grad_(True)
    PerceptualLoss(Maps())(x, torch.ones(1, 2, 2, 2)).backward()
    assert torch.isfinite(x.grad).all()


def test_unit_normalize_keeps_an_fp16_zero_vector_finite():
    f = torch.zeros(1, 4, 2, 2, dtype=torch.float16)
    f[0, :, 0, 0] = 2.0
    u = unit_normalize(f)
    assert u.dtype == torch.float32 and torch.isfinite(u).all()
    torch.testing.assert_close(u[0, :, 0, 0], torch.full((4,), 0.5))


def test_parent_train_does_not_unfreeze_or_un_eval_the_net():
    parent = nn.Module()
    parent.decoder = nn.Conv2d(3, 3, 1)
    parent.perceptual = PerceptualLoss(TinyNet())
    parent.train()
    assert parent.decoder.training and parent.perceptual.training
    assert not any(m.training for m in parent.perceptual.net.modules())
    assert not any(p.requires_grad for p in parent.perceptual.net.parameters())
    x = images()
    assert parent.perceptual(x, x).item() == 0.0  # dropout in training mode would break this


def test_feature_net_of_vqlab_plugs_in():
    from vqlab.evaluation.featnet import FeatNetConfig, build_featnet

    net = build_featnet(FeatNetConfig(arch="vgg", widths=(8, 16), blocks=1))
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    d = PerceptualLoss(net, reduction="none")(x, x.flip(-1))
    assert d.shape == (2,) and (d > 0).all()


def test_load_lpips_without_the_package_is_a_one_line_config_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "lpips", None)  # import lpips -> ImportError
    with pytest.raises(ConfigError, match="pip install lpips torchvision") as e:
        load_lpips("vgg")
    assert "\n" not in str(e.value)
    with pytest.raises(ConfigError, match="vgg"):
        load_lpips("squeeze")


class FakeLPIPS(nn.Module):
    """Stands in for lpips.LPIPS: records its arguments, returns (B, 1, 1, 1)."""

    built: list[dict] = []

    def __init__(self, **kwargs) -> None:
        super().__init__()
        FakeLPIPS.built.append(kwargs)
        self.scale = nn.Parameter(torch.ones(()))
        self.drop = nn.Dropout(0.5)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.drop(self.scale * (x - y).square()).mean((1, 2, 3), keepdim=True)


@pytest.fixture
def fake_lpips(monkeypatch, tmp_path):
    """A fake lpips package under tmp_path/lpips and torch.hub's folder at tmp_path/hub."""
    pkg = tmp_path / "lpips"
    (pkg / "weights" / "v0.1").mkdir(parents=True)
    module = types.ModuleType("lpips")
    module.__file__ = str(pkg / "__init__.py")
    module.LPIPS = FakeLPIPS
    monkeypatch.setitem(sys.modules, "lpips", module)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    FakeLPIPS.built.clear()
    return tmp_path


def test_load_lpips_refuses_missing_weights_before_building(fake_lpips):
    with pytest.raises(ConfigError, match="linear weights"):
        load_lpips("vgg")
    (fake_lpips / "lpips" / "weights" / "v0.1" / "vgg.pth").touch()
    with pytest.raises(ConfigError, match="vgg16-397923af.pth") as e:
        load_lpips("vgg")
    assert "\n" not in str(e.value) and "never downloads" in str(e.value)
    assert FakeLPIPS.built == []  # no random-backbone LPIPS was ever made


def test_load_lpips_builds_from_local_files_frozen(fake_lpips):
    (fake_lpips / "lpips" / "weights" / "v0.1" / "alex.pth").touch()
    (fake_lpips / "hub" / "checkpoints").mkdir(parents=True)
    (fake_lpips / "hub" / "checkpoints" / "alexnet-owt-7be5be79.pth").touch()
    loss = load_lpips("alex", reduction="none")
    assert isinstance(loss, LPIPSLoss)
    assert FakeLPIPS.built == [dict(pretrained=True, net="alex", pnet_rand=False, verbose=False)]
    loss.train()
    assert not loss.net.training and not loss.net.scale.requires_grad
    x = images().requires_grad_(True)
    d = loss(x, images(seed=1))
    assert d.shape == (4,)
    d.sum().backward()
    assert x.grad.abs().sum() > 0 and loss.net.scale.grad is None
