"""Mask schedules and counts, checked against values computed by hand."""

import math

import pytest
import torch

from vqlab.errors import ConfigError
from vqlab.priors.schedules import SCHEDULES, gamma, get_schedule, mask_count


def test_hand_values():
    assert gamma(0.5, "cosine").item() == pytest.approx(math.cos(math.pi / 4))
    assert gamma(0.5, "arccos").item() == pytest.approx(2 / 3)  # arccos(.5) = pi/3
    assert gamma(0.25, "linear").item() == pytest.approx(0.75)
    for name in SCHEDULES:
        assert gamma(0.0, name).item() == pytest.approx(1.0)
        assert gamma(1.0, name).item() == pytest.approx(1e-6)  # clipped, never 0


def test_mask_counts_by_hand():
    assert mask_count(0.5, 64, "cosine").item() == 46  # ceil(64 cos(pi/4)) = ceil(45.25)
    assert mask_count(0.5, 64, "arccos").item() == 43  # ceil(64 * 2/3) = ceil(42.67)
    assert mask_count(0.5, 64, "linear").item() == 32
    assert mask_count(0.0, 64, "cosine").item() == 64
    assert mask_count(1.0, 64, "cosine").item() == 1  # at least one position is masked
    r = torch.tensor([0.0, 0.5, 0.999999])
    assert mask_count(r, 16, "linear").tolist() == [16, 8, 1]


def test_schedules_fall_monotonically():
    r = torch.linspace(0, 1, 101, dtype=torch.float64)
    for name in SCHEDULES:
        g = gamma(r, name)
        assert (g[1:] <= g[:-1]).all(), name
        assert ((g >= 1e-6) & (g <= 1)).all(), name


def test_unknown_schedule_names_the_valid_ones():
    with pytest.raises(ConfigError, match="arccos, cosine, linear"):
        get_schedule("cosin")
    with pytest.raises(ConfigError):
        mask_count(0.5, 16, "square")
