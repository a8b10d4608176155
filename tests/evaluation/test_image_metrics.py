"""PSNR, SSIM, pixel distance and class consistency on hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from tests.evaluation.conftest import bright_dark, shapes_images
from vqlab.data.errors import DataError
from vqlab.data.images import to_tensor
from vqlab.evaluation import class_consistency, pixel_distance, psnr, ssim


def test_psnr_is_inf_for_identical_images_and_hand_computed_for_an_offset() -> None:
    a = np.random.default_rng(0).integers(0, 246, (3, 16, 16, 3)).astype(np.uint8)
    b = a + np.uint8(10)  # MSE = 100 on the 0-255 scale, no clipping
    assert psnr(a, a) == math.inf
    expected = 10 * math.log10(255**2 / 100)  # 28.13 dB
    assert psnr(a, b) == pytest.approx(expected, rel=1e-6)
    # the same pair on the [-1, 1] scale (data range 2) gives the same number
    assert psnr(to_tensor(a), to_tensor(b)) == pytest.approx(expected, rel=1e-6)


def test_psnr_averages_per_image_values() -> None:
    a = np.zeros((2, 16, 16, 1), np.uint8)
    b = a.copy()
    b[0] += 10
    b[1] += 20
    per_image = [10 * math.log10(255**2 / 100), 10 * math.log10(255**2 / 400)]
    assert psnr(a, b) == pytest.approx(np.mean(per_image))


def test_ssim_is_one_for_identical_images_and_lower_for_noisy_ones() -> None:
    a = shapes_images(4, seed=0)
    noisy = np.clip(a + np.random.default_rng(0).normal(0, 30, a.shape), 0, 255).astype(np.uint8)
    assert ssim(a, a) == pytest.approx(1.0)
    assert ssim(a, noisy) < 0.9
    assert ssim(to_tensor(a), to_tensor(noisy)) == pytest.approx(ssim(a, noisy), abs=1e-6)


def test_metrics_refuse_mixed_scales_or_shapes() -> None:
    a = np.zeros((2, 16, 16, 3), np.uint8)
    with pytest.raises(ValueError, match="differ"):
        psnr(a, to_tensor(a))
    with pytest.raises(ValueError, match="differ"):
        ssim(a, a[:1])


def test_pixel_distance_hand_computed_on_three_images() -> None:
    images = np.zeros((3, 2, 2, 1), np.uint8)
    images[1] = 10  # |A - B| = 10 everywhere: RMS 10
    images[2, 1] = 20  # A - C: 0, 0, 20, 20: RMS sqrt(200); B - C: 10 everywhere: RMS 10
    out = pixel_distance(images, labels=np.array([0, 0, 1]))
    assert out["pixel_distance"] == pytest.approx((10 + math.sqrt(200) + 10) / 3)
    # class 0 holds the pair (A, B); class 1 has one image and is skipped
    assert out["pixel_distance_within_class"] == pytest.approx(10.0)
    assert pixel_distance(images)["pixel_distance_within_class"] is None


def test_pixel_distance_random_pairs_estimate_the_all_pairs_mean() -> None:
    images = shapes_images(120, side=16, seed=3)  # 7140 pairs, more than the 2000 drawn
    i, j = np.triu_indices(len(images), k=1)
    d = images[i].astype(np.float64) - images[j]
    exact = np.sqrt((d * d).reshape(len(d), -1).mean(1)).mean()
    assert pixel_distance(images, pairs=2000)["pixel_distance"] == pytest.approx(exact, rel=0.03)
    assert pixel_distance(images, pairs=50, seed=1) == pixel_distance(images, pairs=50, seed=1)


def test_pixel_distance_refuses_bad_input() -> None:
    with pytest.raises(DataError, match="uint8"):
        pixel_distance(np.zeros((3, 2, 2, 1), np.float32))
    with pytest.raises(DataError, match="labels"):
        pixel_distance(np.zeros((3, 2, 2, 1), np.uint8), labels=np.zeros(2))


class _Brightness(nn.Module):
    """Class 1 when the image's mean is above mid-grey, else class 0."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = x.mean(dim=(1, 2, 3))
        return torch.stack([-m, m], dim=1)


def test_class_consistency_is_the_accuracy_on_the_conditioning_labels() -> None:
    images, labels = bright_dark(10)
    assert class_consistency(_Brightness(), images, labels) == 1.0
    flipped = labels.copy()
    flipped[:5] = 1  # 5 dark images claimed as bright
    assert class_consistency(_Brightness(), images, flipped, batch_size=3) == 0.75
