"""FD and KD: agreement with NumPy/SciPy references and closed forms, and what they measure."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch
import torch.nn.functional as F

from tests.evaluation.conftest import shapes_images
from vqlab.data.errors import DataError
from vqlab.evaluation import (
    build_featnet,
    extract_features,
    fd_kd,
    frechet_distance,
    kernel_distance,
)
from vqlab.evaluation.featnet import default_config


def _scipy_fd(a: np.ndarray, b: np.ndarray) -> float:
    """The textbook FD with scipy.linalg.sqrtm, as pytorch-fid computes it."""
    mu_a, mu_b = a.mean(0), b.mean(0)
    s_a, s_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = scipy.linalg.sqrtm(s_a @ s_b).real
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(s_a + s_b - 2 * covmean))


def _naive_kd(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD^2 with k(a, b) = (a.b / d + 1)^3, written out pair by pair."""
    d, m, n = x.shape[1], len(x), len(y)

    def k(a: np.ndarray, b: np.ndarray) -> float:
        return (a @ b / d + 1) ** 3

    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(n)) / (m * n)
    return xx + yy - 2 * xy


def test_fd_of_a_set_with_itself_is_zero() -> None:
    feats = torch.randn(500, 16, generator=torch.Generator().manual_seed(0))
    assert abs(frechet_distance(feats, feats)) < 1e-6


def test_fd_matches_scipy_on_gaussians_with_known_shift() -> None:
    rng = np.random.default_rng(0)
    a_mat = rng.normal(size=(8, 8))
    real = rng.normal(size=(2000, 8)) @ a_mat
    fake = rng.normal(size=(1500, 8)) @ (a_mat * 1.5) + 0.7
    fd = frechet_distance(real, fake)
    assert fd == pytest.approx(_scipy_fd(real, fake), rel=1e-6)
    assert fd > 1.0


def test_fd_matches_the_closed_form_for_diagonal_covariances() -> None:
    # for diagonal S_r, S_f: FD = |mu_r - mu_f|^2 + sum (s_r - s_f)^2, with s the std devs;
    # checked on the sample moments, which are what FD fits
    rng = np.random.default_rng(1)
    std_r, std_f = np.array([1.0, 2.0, 0.5, 3.0]), np.array([2.0, 1.0, 0.5, 1.0])
    real = rng.normal(size=(100_000, 4)) * std_r
    fake = rng.normal(size=(100_000, 4)) * std_f + np.array([1.0, 0.0, -2.0, 0.5])
    expected = ((np.array([1.0, 0.0, -2.0, 0.5])) ** 2).sum() + ((std_r - std_f) ** 2).sum()
    assert frechet_distance(real, fake) == pytest.approx(expected, rel=2e-2)


def test_kd_is_near_zero_for_two_halves_and_positive_for_shifted_sets() -> None:
    rng = np.random.default_rng(2)
    feats = rng.normal(size=(2000, 16))
    same, same_std = kernel_distance(feats[:1000], feats[1000:], subsets=20, subset_size=500)
    shifted, _ = kernel_distance(feats[:1000], feats[1000:] + 0.5, subsets=20, subset_size=500)
    assert abs(same) < 3 * same_std + 1e-3
    assert shifted > 50 * max(abs(same), same_std)


def test_kd_matches_a_naive_unbiased_mmd() -> None:
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(30, 5)), rng.normal(size=(30, 5)) + 0.3
    # one subset that holds every row: the estimate is the MMD of the whole sets
    kd, kd_std = kernel_distance(x, y, subsets=1, subset_size=1000)
    assert kd == pytest.approx(_naive_kd(x, y), rel=1e-9)
    assert kd_std == 0.0


def test_kd_is_seeded() -> None:
    rng = np.random.default_rng(4)
    x, y = rng.normal(size=(300, 4)), rng.normal(size=(300, 4))
    assert kernel_distance(x, y, 5, 50, seed=1) == kernel_distance(x, y, 5, 50, seed=1)
    assert kernel_distance(x, y, 5, 50, seed=1) != kernel_distance(x, y, 5, 50, seed=2)


def _blur(images: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur of (N, H, W, C) uint8 images, separable, reflect padding."""
    radius = int(3 * sigma) + 1
    t = torch.arange(-radius, radius + 1, dtype=torch.float64)
    k = torch.exp(-(t**2) / (2 * sigma**2))
    k /= k.sum()
    x = torch.from_numpy(images).double().permute(0, 3, 1, 2)  # (N, C, H, W)
    c = x.shape[1]
    x = F.pad(x, (radius, radius, radius, radius), mode="reflect")
    x = F.conv2d(x, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    x = F.conv2d(x, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)
    return x.permute(0, 2, 3, 1).round().clamp(0, 255).to(torch.uint8).numpy()


@pytest.fixture(scope="module")
def random_featnet():
    # a randomly initialised vgg feature net (seed 0), not a trained one: its random edge
    # filters respond to blur and noise, and the test needs no training. (A random resnet is
    # a poorer probe: its skip paths pass mostly the mean colour, whose sampling noise swamps
    # light blur.)
    torch.manual_seed(0)
    return build_featnet(default_config("vgg", 3, 10)).eval()


def test_fd_grows_with_blur_and_with_noise(random_featnet) -> None:
    real_feats = extract_features(random_featnet, shapes_images(200, seed=0))
    ref = shapes_images(200, seed=1)  # a second sample of the same distribution: the floor

    def fd(images: np.ndarray) -> float:
        return frechet_distance(real_feats, extract_features(random_featnet, images))

    rng = np.random.default_rng(0)
    blurred = [fd(_blur(ref, s)) for s in (0.7, 1.5, 3.0)]
    noisy = [
        fd(np.clip(ref + rng.normal(0, s, ref.shape), 0, 255).astype(np.uint8)) for s in (8, 24, 64)
    ]
    floor = fd(ref)
    assert floor < blurred[0] < blurred[1] < blurred[2]
    assert floor < noisy[0] < noisy[1] < noisy[2]


def test_fd_kd_reports_counts_and_refuses_mismatching_sizes(random_featnet) -> None:
    real, fake = shapes_images(20, seed=0), shapes_images(30, side=32, seed=1)
    out = fd_kd(real, fake, random_featnet, subsets=2, subset_size=10)
    assert set(out) == {"fd", "kd", "kd_std", "n_real", "n_fake", "featnet_sha256"}
    assert (out["n_real"], out["n_fake"]) == (20, 30)
    with pytest.raises(DataError, match="REAL images are 32x32x3 but FAKE images are 24x24x3"):
        fd_kd(real, shapes_images(5, side=24), random_featnet)
