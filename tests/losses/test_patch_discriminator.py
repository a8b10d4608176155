"""PatchDiscriminator: logit grid sizes, receptive field, gradient to the input, init, norms."""

import pytest
import torch
from torch import nn

from vqlab.losses import PatchDiscriminator, r1_penalty


@pytest.mark.parametrize(
    ("side", "layers", "grid"),
    [(32, 3, 2), (64, 3, 6), (256, 3, 30), (32, 2, 6), (32, 1, 14), (24, 3, 1)],
)
def test_logit_grid(side, layers, grid):
    d = PatchDiscriminator(width=8, layers=layers)
    out = d(torch.randn(2, 3, side, side))
    assert out.shape == (2, 1, grid, grid)
    assert d.output_size(side, side) == (grid, grid)


def test_too_small_an_input_is_refused_with_the_minimum_side():
    with pytest.raises(ValueError, match="side >= 24"):
        PatchDiscriminator(width=8, layers=3)(torch.randn(1, 3, 16, 16))


@pytest.mark.parametrize("layers", [1, 2])
def test_receptive_field_is_the_support_of_one_logits_gradient(layers):
    torch.manual_seed(0)
    d = PatchDiscriminator(in_channels=1, width=4, layers=layers, norm="none")
    x = torch.randn(1, 1, 96, 96, requires_grad=True)
    out = d(x)
    h = out.shape[2] // 2
    out[0, 0, h, h].backward()  # a central logit, away from the zero padding
    rows = x.grad[0, 0].abs().sum(1).nonzero()
    assert int(rows.max() - rows.min()) + 1 == d.receptive_field == {1: 16, 2: 34}[layers]
    assert PatchDiscriminator(layers=3).receptive_field == 70


@pytest.mark.parametrize("norm", ["batch", "group", "none"])
def test_gradient_reaches_the_input(norm):
    d = PatchDiscriminator(width=8, norm=norm)
    x = torch.randn(3, 3, 32, 32, requires_grad=True)
    d(x).mean().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    assert all(p.grad is not None for p in d.parameters())


def test_r1_back_propagates_through_the_discriminator():
    d = PatchDiscriminator(width=8, norm="group")
    x = torch.randn(2, 3, 32, 32, requires_grad=True)
    r1_penalty(d(x), x).backward()
    assert d.net[0].weight.grad.abs().sum() > 0


def test_taming_init_and_channel_cap():
    torch.manual_seed(0)
    d = PatchDiscriminator(width=64, layers=3)
    convs = [m for m in d.modules() if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [64, 128, 256, 512, 1]
    assert convs[2].weight.std().item() == pytest.approx(0.02, rel=0.05)
    bns = [m for m in d.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(bns) == 3 and bns[-1].weight.mean().item() == pytest.approx(1.0, abs=0.01)
    acts = [m for m in d.modules() if isinstance(m, nn.LeakyReLU | nn.ReLU)]
    assert len(acts) == 4 and all(getattr(a, "negative_slope", 0) == 0.2 for a in acts)
    capped = PatchDiscriminator(width=4, layers=5)
    assert max(m.out_channels for m in capped.modules() if isinstance(m, nn.Conv2d)) == 32


def test_norm_choices():
    group = PatchDiscriminator(width=8, norm="group")
    assert all(
        m.num_channels % m.num_groups == 0 for m in group.modules() if isinstance(m, nn.GroupNorm)
    )
    bare = PatchDiscriminator(width=8, norm="none")
    assert not any(isinstance(m, nn.BatchNorm2d | nn.GroupNorm) for m in bare.modules())
    # without a norm's shift every conv keeps its own bias
    assert all(m.bias is not None for m in bare.modules() if isinstance(m, nn.Conv2d))
    with pytest.raises(ValueError, match="batch"):
        PatchDiscriminator(norm="layer")
    with pytest.raises(ValueError, match="layers"):
        PatchDiscriminator(layers=0)
