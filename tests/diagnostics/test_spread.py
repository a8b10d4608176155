"""Pairwise spread and nearest-code distance: hand values, naive references, memory bound."""

import math

import pytest
import torch
import torch.nn.functional as F

from vqlab.diagnostics import mean_nearest_distance, mean_pairwise_cos_dist, mean_pairwise_l2


def _naive_mean_l2(x: torch.Tensor) -> float:
    x64 = x.double()
    i, j = torch.triu_indices(x.shape[0], x.shape[0], offset=1)
    return torch.cdist(x64, x64)[i, j].mean().item()


def _naive_mean_cos_dist(x: torch.Tensor) -> float:
    u = F.normalize(x.double(), dim=1)  # zero rows stay zero, so their cosine is 0
    i, j = torch.triu_indices(x.shape[0], x.shape[0], offset=1)
    return (1.0 - u @ u.T)[i, j].mean().item()


class _TileSpy:
    """Wraps torch.addmm to record the largest tile it returns."""

    def __init__(self):
        self.real = torch.addmm
        self.max_numel = 0

    def __call__(self, *args, **kwargs):
        out = self.real(*args, **kwargs)
        self.max_numel = max(self.max_numel, out.numel())
        return out


def test_two_points_at_distance_three():
    x = torch.tensor([[0.0, 0.0, 0.0], [1.0, 2.0, 2.0]])
    assert mean_pairwise_l2(x) == pytest.approx(3.0, rel=1e-12)


def test_unit_square_hand_value():
    # 4 sides of length 1 and 2 diagonals of length sqrt(2) over 6 pairs.
    x = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    assert mean_pairwise_l2(x) == pytest.approx((4 + 2 * math.sqrt(2)) / 6, rel=1e-12)


@pytest.mark.parametrize("chunk_bytes", [8, 8 * 257, 1000, 8 * 257 * 40, 2**20, 64 * 2**20])
def test_chunked_equals_naive_cdist(chunk_bytes):
    gen = torch.Generator().manual_seed(0)
    # Far from the origin, where the ||a||^2 + ||b||^2 - 2ab expansion loses digits if uncentered.
    x = torch.randn(257, 6, generator=gen) * 0.5 + 100.0
    assert mean_pairwise_l2(x, chunk_bytes=chunk_bytes) == pytest.approx(
        _naive_mean_l2(x), rel=1e-10
    )


def test_tiles_respect_the_budget(monkeypatch):
    spy = _TileSpy()
    monkeypatch.setattr(torch, "addmm", spy)
    x = torch.randn(1000, 4, generator=torch.Generator().manual_seed(1))
    value = mean_pairwise_l2(x, chunk_bytes=64 * 1024)
    assert 0 < spy.max_numel * 8 <= 64 * 1024
    assert value == pytest.approx(_naive_mean_l2(x), rel=1e-10)


@pytest.mark.slow
def test_65536_rows_match_the_gaussian_mean_distance(monkeypatch):
    # For x, y ~ N(0, I_4), x - y ~ N(0, 2 I_4) and E||x - y|| = 2 Gamma(5/2) / Gamma(2).
    spy = _TileSpy()
    monkeypatch.setattr(torch, "addmm", spy)
    x = torch.randn(65536, 4, generator=torch.Generator().manual_seed(2))
    value = mean_pairwise_l2(x, chunk_bytes=4 * 2**20)
    expected = 2 * math.gamma(2.5) / math.gamma(2.0)
    assert value == pytest.approx(expected, rel=0.01)
    assert spy.max_numel * 8 <= 4 * 2**20  # never the 65,536^2 matrix (32 GiB in float64)


def test_20000_rows_match_a_full_matrix_reference():
    # Reference: full (both triangles) cdist in column blocks, halved, in float64.
    x = torch.randn(20000, 8, generator=torch.Generator().manual_seed(3)) * 3 + 5
    x64 = x.double()
    total = sum(torch.cdist(x64, x64[c : c + 2500]).sum().item() for c in range(0, 20000, 2500))
    expected = total / (20000 * 19999)
    assert mean_pairwise_l2(x, chunk_bytes=2**22) == pytest.approx(expected, rel=1e-10)


def test_invariances():
    x = torch.randn(100, 5, generator=torch.Generator().manual_seed(4)).double()
    q, _ = torch.linalg.qr(torch.randn(5, 5, generator=torch.Generator().manual_seed(5)).double())
    base = mean_pairwise_l2(x)
    assert mean_pairwise_l2(x @ q + 7.0) == pytest.approx(base, rel=1e-10)
    assert mean_pairwise_l2(3.0 * x) == pytest.approx(3.0 * base, rel=1e-10)
    assert mean_pairwise_l2(x[torch.randperm(100)]) == pytest.approx(base, rel=1e-10)


def test_pairwise_l2_bad_input_raises():
    with pytest.raises(ValueError, match="at least 2 rows"):
        mean_pairwise_l2(torch.zeros(1, 3))
    with pytest.raises(ValueError, match=r"shape \(N, D\)"):
        mean_pairwise_l2(torch.zeros(5))
    with pytest.raises(TypeError, match="floating-point"):
        mean_pairwise_l2(torch.zeros(4, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="chunk_bytes"):
        mean_pairwise_l2(torch.zeros(4, 2), chunk_bytes=4)


def test_cos_dist_hand_values():
    assert mean_pairwise_cos_dist(torch.tensor([[1.0, 0.0], [-2.0, 0.0]])) == pytest.approx(2.0)
    assert mean_pairwise_cos_dist(torch.tensor([[1.0, 1.0], [3.0, 3.0]])) == pytest.approx(0.0)
    # Three pairs: two orthogonal (distance 1 each) and one opposite (distance 2).
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    assert mean_pairwise_cos_dist(x) == pytest.approx((1 + 1 + 2) / 3)


def test_cos_dist_matches_naive_reference():
    x = torch.randn(300, 7, generator=torch.Generator().manual_seed(6)) + 0.3
    assert mean_pairwise_cos_dist(x) == pytest.approx(_naive_mean_cos_dist(x), rel=1e-10)


def test_cos_dist_zero_rows_count_as_cosine_zero():
    x = torch.randn(50, 4, generator=torch.Generator().manual_seed(7))
    x[[3, 20]] = 0.0
    assert mean_pairwise_cos_dist(x) == pytest.approx(_naive_mean_cos_dist(x), rel=1e-10)
    assert mean_pairwise_cos_dist(torch.zeros(5, 3)) == pytest.approx(1.0)


def test_nearest_distance_hand_value():
    codebook = torch.tensor([[0.0, 0.0], [10.0, 0.0]])
    x = torch.tensor([[1.0, 0.0], [9.0, 0.0], [0.0, 5.0]])
    assert mean_nearest_distance(x, codebook) == pytest.approx(7.0 / 3.0, rel=1e-6)


def test_nearest_distance_matches_cdist_min():
    gen = torch.Generator().manual_seed(8)
    x, codebook = torch.randn(500, 8, generator=gen), torch.randn(64, 8, generator=gen)
    expected = torch.cdist(x.double(), codebook.double()).min(dim=1).values.mean().item()
    assert mean_nearest_distance(x, codebook) == pytest.approx(expected, rel=1e-5)


def test_nearest_distance_dim_mismatch_raises():
    with pytest.raises(ValueError, match="D=3"):
        mean_nearest_distance(torch.zeros(4, 3), torch.zeros(2, 5))
