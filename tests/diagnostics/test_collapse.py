"""Collapse diagnostics: hand fixtures, numpy/scikit-learn references, invariants."""

import math

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from vqlab.diagnostics import (
    class_separation,
    effective_dim,
    effective_rank,
    mode_stats,
    modes_in_recon,
    probe_accuracy,
    recon_mode_accuracy,
    stratified_split,
)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _axis_points(a: float, b: float, c: float) -> torch.Tensor:
    """Six points +-a e1, +-b e2, +-c e3: centered, variances proportional to a^2, b^2, c^2."""
    e = torch.eye(3, dtype=torch.float64) * torch.tensor([a, b, c], dtype=torch.float64)
    return torch.cat([e, -e])


def test_effective_dim_line_is_one():
    t = torch.linspace(-3, 5, 200, dtype=torch.float64)[:, None]
    direction = torch.tensor([[1.0, -2.0, 0.5, 3.0, 0.0]], dtype=torch.float64)
    assert effective_dim(t * direction + 4.0) == 1


def test_effective_dim_isotropic_gaussian_is_three():
    assert effective_dim(torch.randn(5000, 3, generator=_gen(0))) == 3


def test_effective_dim_three_dim_subspace_of_ten():
    basis, _ = torch.linalg.qr(torch.randn(10, 3, generator=_gen(1)))  # (10, 3) orthonormal
    assert effective_dim(torch.randn(2000, 3, generator=_gen(2)) @ basis.T) == 3


def test_effective_dim_hand_thresholds():
    # Variance shares 100/102, 1/102, 1/102: 0.980 after one component, 0.990196 after two.
    x = _axis_points(10.0, 1.0, 1.0)
    assert effective_dim(x) == 2
    assert effective_dim(x, threshold=0.5) == 1
    assert effective_dim(x, threshold=0.995) == 3
    assert effective_dim(x, threshold=1.0) == 3


def test_effective_dim_identical_codes_is_zero_and_bad_threshold_raises():
    assert effective_dim(torch.ones(8, 4)) == 0
    with pytest.raises(ValueError, match="threshold"):
        effective_dim(torch.randn(8, 4), threshold=0.0)


def test_effective_rank_hand_values():
    # Singular values (sqrt 2, sqrt 2): p = (1/2, 1/2), erank 2.
    assert effective_rank(_axis_points(1.0, 1.0, 0.0)) == pytest.approx(2.0, rel=1e-12)
    # Singular values proportional to (2, 1): p = (2/3, 1/3).
    p = np.array([2 / 3, 1 / 3])
    expected = math.exp(-(p * np.log(p)).sum())
    assert effective_rank(_axis_points(2.0, 1.0, 0.0)) == pytest.approx(expected, rel=1e-12)
    assert effective_rank(torch.full((5, 3), 2.0)) == 0.0


def test_effective_rank_matches_numpy_and_is_invariant():
    x = torch.randn(400, 12, generator=_gen(3)) * torch.linspace(0.1, 3, 12)
    xn = x.double().numpy()
    s = np.linalg.svd(xn - xn.mean(0), compute_uv=False)
    p = s / s.sum()
    expected = math.exp(-(p * np.log(p)).sum())
    assert effective_rank(x) == pytest.approx(expected, rel=1e-6)
    assert effective_rank(5.0 * x + 3.0) == pytest.approx(expected, rel=1e-6)
    assert 1.0 <= effective_rank(x) <= 12.0


def test_class_separation_hand_fixture():
    # Class means (0,0), (3,0), (0,4): pairwise 3, 4, 5, mean 4. Every point is 1 from its mean.
    emb = torch.tensor(
        [[0, 1], [0, -1], [3, 1], [3, -1], [4, 0], [2, 0], [0, 5], [0, 3]], dtype=torch.float32
    )
    labels = torch.tensor([0, 0, 1, 1, 1, 1, 7, 7])
    assert class_separation(emb, labels) == pytest.approx(4.0, rel=1e-6)


def test_class_separation_scale_invariant_and_edge_cases():
    emb = torch.randn(90, 4, generator=_gen(4))
    labels = torch.arange(90) % 3
    assert class_separation(2.5 * emb - 1, labels) == pytest.approx(
        class_separation(emb, labels), rel=1e-9
    )
    tight = torch.tensor([[0.0, 0.0], [0.0, 0.0], [1.0, 1.0]])
    assert class_separation(tight, torch.tensor([0, 0, 1])) == math.inf
    assert class_separation(torch.zeros(4, 2), torch.tensor([0, 0, 1, 1])) == 0.0
    with pytest.raises(ValueError, match="at least 2 classes"):
        class_separation(emb, torch.zeros(90, dtype=torch.long))
    with pytest.raises(ValueError, match=r"shape \(90,\)"):
        class_separation(emb, labels[:10])


def test_stratified_split_partitions_by_class_and_is_seeded():
    labels = torch.cat([torch.zeros(50), torch.ones(30), torch.full((1,), 2)]).long()
    train, test = stratified_split(labels, test_fraction=0.2, seed=0)
    assert sorted(torch.cat([train, test]).tolist()) == list(range(81))
    assert torch.bincount(labels[test], minlength=3).tolist() == [10, 6, 0]
    again = stratified_split(labels, test_fraction=0.2, seed=0)
    assert torch.equal(train, again[0]) and torch.equal(test, again[1])
    assert not torch.equal(test, stratified_split(labels, seed=1)[1])
    with pytest.raises(ValueError, match="empty test set"):
        stratified_split(torch.tensor([0, 1, 2]))


def _blobs(n_per: int, centers: torch.Tensor, scale: float, seed: int):
    gen = _gen(seed)
    k, d = centers.shape
    x = centers.repeat_interleave(n_per, dim=0) + scale * torch.randn(k * n_per, d, generator=gen)
    return x, torch.arange(k).repeat_interleave(n_per)


def _sklearn_accuracy(x, labels, l2=1e-4, seed=0, test_fraction=0.2):
    train, test = stratified_split(labels, test_fraction=test_fraction, seed=seed)
    scaler = StandardScaler().fit(x[train].double().numpy())
    clf = LogisticRegression(C=1.0 / (l2 * len(train)), max_iter=5000)
    clf.fit(scaler.transform(x[train].double().numpy()), labels[train].numpy())
    return clf.score(scaler.transform(x[test].double().numpy()), labels[test].numpy())


def test_probe_separable_blobs_is_perfect_like_sklearn():
    centers = torch.tensor([[0.0, 0.0, 0.0], [6.0, 0.0, 0.0], [0.0, 6.0, 0.0]])
    x, labels = _blobs(100, centers, 0.5, seed=5)
    assert probe_accuracy(x, labels) == 1.0
    assert _sklearn_accuracy(x, labels) == 1.0


def test_probe_overlapping_blobs_agree_with_sklearn():
    centers = torch.randn(4, 6, generator=_gen(6))
    x, labels = _blobs(300, centers, 1.2, seed=7)
    ours = probe_accuracy(x, labels, seed=3)
    reference = _sklearn_accuracy(x, labels, seed=3)
    assert 0.4 < reference < 0.95  # the toy really is non-separable
    assert ours == pytest.approx(reference, abs=0.02)


def test_probe_is_deterministic_and_near_chance_on_random_labels():
    x = torch.randn(1000, 8, generator=_gen(8))
    labels = torch.randint(0, 4, (1000,), generator=_gen(9))
    first = probe_accuracy(x, labels, seed=2)
    assert first == probe_accuracy(x, labels, seed=2)
    assert abs(first - 0.25) < 0.1


def test_probe_bad_input_raises():
    with pytest.raises(ValueError, match="at least 2 classes"):
        probe_accuracy(torch.randn(10, 2), torch.zeros(10, dtype=torch.long))
    with pytest.raises(TypeError, match="integer dtype"):
        probe_accuracy(torch.randn(10, 2), torch.zeros(10))


def test_mode_stats_hand_fixture():
    # code 0 -> label 5; code 1 -> 7 (2 of 3); code 2 -> 9; code 3 -> 9; code 4 tie -> 3.
    indices = torch.tensor([0, 0, 1, 1, 1, 2, 3, 4, 4])
    labels = torch.tensor([5, 5, 5, 7, 7, 9, 9, 8, 3])
    stats = mode_stats(indices, labels, 8)
    # Owners: 5, 7, 9, 9, 3 -> four modes, code shares (1, 1, 2, 1) / 5.
    assert stats["modes_with_tokens"] == 4
    p = np.array([0.2, 0.2, 0.4, 0.2])
    assert stats["mode_entropy"] == pytest.approx(-(p * np.log(p)).sum(), rel=1e-12)


def _naive_mode_stats(indices, labels):
    owners = []
    for code in sorted(set(indices)):
        seen = [lab for i, lab in zip(indices, labels, strict=True) if i == code]
        owners.append(min(set(seen), key=lambda lab: (-seen.count(lab), lab)))
    shares = np.array([owners.count(m) for m in set(owners)]) / len(owners)
    return len(set(owners)), float(-(shares * np.log(shares)).sum())


def test_mode_stats_matches_naive_reference():
    indices = torch.randint(0, 40, (600,), generator=_gen(10))
    labels = (indices // 8 + torch.randint(0, 3, (600,), generator=_gen(11))) % 6
    stats = mode_stats(indices, labels, 64)
    n_modes, entropy = _naive_mode_stats(indices.tolist(), labels.tolist())
    assert stats["modes_with_tokens"] == n_modes
    assert stats["mode_entropy"] == pytest.approx(entropy, rel=1e-12)


def test_mode_stats_single_mode_and_errors():
    stats = mode_stats(torch.tensor([0, 1, 2]), torch.tensor([4, 4, 4]), 3)
    assert stats == {"modes_with_tokens": 1, "mode_entropy": 0.0}
    with pytest.raises(ValueError, match="indices must lie in"):
        mode_stats(torch.tensor([0, 3]), torch.tensor([0, 0]), 3)
    with pytest.raises(ValueError, match=r"labels must have shape \(2,\)"):
        mode_stats(torch.tensor([0, 1]), torch.tensor([0, 0, 1]), 3)


def test_modes_in_recon_hand_fixture():
    means = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    recon = torch.tensor([[0.5, 0.0], [10.0, 0.2], [5.0, 5.0]])
    assert modes_in_recon(recon, means, radius=1.0) == 2
    assert modes_in_recon(recon, means, radius=0.1) == 0
    assert modes_in_recon(recon, means, radius=7.5) == 3  # (5, 5) is 7.07 from (0, 10)
    with pytest.raises(ValueError, match="radius"):
        modes_in_recon(recon, means, radius=0.0)


def test_recon_mode_accuracy_hand_fixture():
    means = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    recon = torch.tensor([[0.5, 0.0], [9.0, 1.0], [1.0, 2.0]])  # last is nearest mean 0
    assert recon_mode_accuracy(recon, torch.tensor([0, 1, 2]), means) == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="index rows of means"):
        recon_mode_accuracy(recon, torch.tensor([0, 1, 3]), means)
    with pytest.raises(ValueError, match="d=2"):
        recon_mode_accuracy(recon, torch.tensor([0, 1, 2]), torch.zeros(3, 4))
