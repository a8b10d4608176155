"""Tests of greedy k-means++ seeding (vqlab.quantizers.kmeans): scikit-learn parity, spread.

Greedy k-means++ (scikit-learn's default) draws ``2 + floor(ln k)`` D² candidates per pick and
keeps the one that lowers the potential most; ``n_trials=1`` is plain k-means++. The data are
scikit-learn blobs with more clusters requested (k = 20) than the data has (5).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.cluster import KMeans
from sklearn.datasets import make_blobs

from vqlab.quantizers.distance import nearest_code
from vqlab.quantizers.kmeans import (
    _d2_sample,
    default_trials,
    kmeans,
    kmeans_parallel,
    kmeans_plusplus,
)

K = 20
SEEDS = range(10)


@pytest.fixture(scope="module")
def blobs5() -> np.ndarray:
    """(4000, 8) float32: 5 unit-std blobs, ``make_blobs`` defaults otherwise."""
    x, _ = make_blobs(n_samples=4000, centers=5, n_features=8, random_state=0)
    return x.astype(np.float32)


@pytest.fixture(scope="module")
def sklearn_inertia(blobs5) -> np.ndarray:
    """(len(SEEDS),) scikit-learn's inertia after 20 Lloyd steps from its own k-means++."""
    fits = [
        KMeans(K, init="k-means++", n_init=1, max_iter=20, tol=0, algorithm="lloyd", random_state=s)
        for s in SEEDS
    ]
    return np.array([f.fit(blobs5).inertia_ for f in fits])


def potential(x: torch.Tensor, centroids: torch.Tensor) -> float:
    """Sum of squared distances from the rows of x (N, D) to the nearest of centroids (k, D)."""
    return nearest_code(x, centroids).distances.double().sum().item()


def reference_d2(x: torch.Tensor, u: torch.Tensor, w: torch.Tensor | None = None) -> list[int]:
    """Greedy D² sampling written out naively in float64, as scikit-learn's _kmeans_plusplus.

    x: (N, D); u: (k, t) uniform draws, row i for pick i (the first pick uses ``u[0, 0]``);
    w: (N,) weights or None. Builds the full (t, N) distance matrix per pick: small inputs only.
    """
    x = x.double()
    n = x.shape[0]
    w = torch.ones(n, dtype=torch.float64) if w is None else w.double()

    def draw(score: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        cdf = score.cumsum(0)
        return torch.searchsorted(cdf, v * cdf[-1], right=True).clamp_max(n - 1)

    first = int(draw(w, u[0, :1]))
    picks, min_d = [first], ((x - x[first]) ** 2).sum(1)
    for i in range(1, u.shape[0]):
        cand = draw(w * min_d, u[i])  # (t,)
        new = torch.minimum(torch.cdist(x[cand], x) ** 2, min_d)  # (t, N)
        best = int(cand[int((new * w).sum(1).argmin())])
        picks.append(best)
        min_d = torch.minimum(min_d, ((x - x[best]) ** 2).sum(1))
    return picks


def test_default_trials_is_sklearns():
    # scikit-learn: n_local_trials = 2 + int(np.log(n_clusters))
    assert [default_trials(k) for k in (1, 2, 3, 20, 1024, 16384)] == [2, 2, 3, 4, 8, 11]
    assert all(default_trials(k) == 2 + int(np.log(k)) for k in range(1, 5000))
    with pytest.raises(ValueError, match="n_trials"):
        kmeans_plusplus(torch.randn(10, 2), 3, n_trials=0)
    with pytest.raises(ValueError, match="n_trials"):
        kmeans(torch.randn(10, 2), 3, n_trials=2.0)


@pytest.mark.parametrize("n_trials", [1, 2, 5])
@pytest.mark.parametrize("weighted", [False, True])
def test_picks_equal_the_naive_reference(n_trials, weighted):
    x = torch.from_numpy(make_blobs(300, centers=5, n_features=3, random_state=1)[0]).float()
    w = (
        torch.randint(1, 6, (300,), generator=torch.Generator().manual_seed(0))
        if weighted
        else None
    )
    u = torch.rand(12, n_trials, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    got = _d2_sample(x, 12, torch.Generator().manual_seed(3), w, n_trials=n_trials)
    assert got.tolist() == reference_d2(x, u, w)


def test_one_trial_is_plain_kmeanspp():
    # Plain k-means++: the first row uniform, then each row with probability ∝ d², one draw
    # of the generator per pick; trials=1 must be exactly that, with no scoring in between.
    x = torch.from_numpy(make_blobs(500, centers=5, n_features=4, random_state=2)[0]).float()
    u = torch.rand(K, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    expected = reference_d2(x, u.unsqueeze(1))
    assert _d2_sample(x, K, torch.Generator().manual_seed(5)).tolist() == expected
    plain = kmeans_plusplus(x, K, seed=5, n_trials=1)
    assert torch.equal(plain, x[expected])
    assert torch.equal(kmeans(x, K, iters=0, seed=5, n_trials=1).centroids, plain)
    assert not torch.equal(kmeans_plusplus(x, K, seed=5), plain)  # the default is greedy


def test_tiles_do_not_change_the_picks(blobs5):
    x = torch.from_numpy(blobs5)
    t = default_trials(K)
    whole = kmeans_plusplus(x, K, seed=1)
    tiled = kmeans_plusplus(x, K, seed=1, max_bytes=4 * t * 333)  # 333-row tiles, 13 of them
    assert torch.equal(whole, tiled)


def test_seeded_greedy_is_bitwise_reproducible(blobs5):
    x = torch.from_numpy(blobs5)
    a = kmeans_plusplus(x, K, seed=4)
    assert torch.equal(a, kmeans_plusplus(x, K, seed=4))
    assert torch.equal(a, kmeans_plusplus(x, K, generator=torch.Generator().manual_seed(4)))
    assert torch.equal(a, kmeans(x, K, iters=0, seed=4).centroids)
    assert not torch.equal(a, kmeans_plusplus(x, K, seed=5))
    p = kmeans_parallel(x, K, seed=4)
    assert torch.equal(p, kmeans_parallel(x, K, seed=4))
    assert torch.equal(p, kmeans(x, K, iters=0, seed=4, init="kmeans||").centroids)


def test_greedy_seeding_lowers_the_expected_potential(blobs5):
    # Measured over seeds 0-19: mean potential 33.4k greedy vs 39.1k plain (seeding alone).
    x = torch.from_numpy(blobs5)
    greedy = [potential(x, kmeans_plusplus(x, K, seed=s)) for s in range(20)]
    plain = [potential(x, kmeans_plusplus(x, K, seed=s, n_trials=1)) for s in range(20)]
    assert np.mean(greedy) <= np.mean(plain)
    # k-means|| ends in the same weighted greedy step
    par = [potential(x, kmeans_parallel(x, K, seed=s)) for s in range(20)]
    par1 = [potential(x, kmeans_parallel(x, K, seed=s, n_trials=1)) for s in range(20)]
    assert np.mean(par) <= np.mean(par1)


def test_inertia_within_2pct_of_sklearn_on_every_seed(blobs5, sklearn_inertia):
    # Each seed against scikit-learn's mean over the same seeds: the two draw different random
    # numbers, so seed s of one has no counterpart in the other. Measured: every vqlab seed
    # within 0.7% (scikit-learn's own seeds within 1.2%); plain seeding is 2.4% off on seed 1.
    x = torch.from_numpy(blobs5)
    ours = np.array([kmeans(x, K, iters=20, seed=s).inertia[-1] for s in SEEDS])
    ratio = ours / sklearn_inertia.mean()
    assert np.all(np.abs(ratio - 1) < 0.02), ratio


@pytest.mark.parametrize(("n_features", "bound"), [(8, 0.02), (2, 0.10)])
def test_inertia_spread_over_seeds_is_small(n_features, bound):
    # (max - min) / min over seeds 0-9, measured on 4,000 points: 8-D 1.2% greedy, 3.0% plain,
    # 2.0% scikit-learn; 2-D 5.1% greedy, 31% plain (seed 0 lands 29% above the mean of
    # scikit-learn's seeds), 3.7% scikit-learn.
    x, _ = make_blobs(n_samples=4000, centers=5, n_features=n_features, random_state=0)
    x = torch.from_numpy(x.astype(np.float32))
    ours = np.array([kmeans(x, K, iters=20, seed=s).inertia[-1] for s in SEEDS])
    spread = ours.max() / ours.min() - 1
    assert spread < bound, spread


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("n_trials", [1, 5])
def test_cuda_greedy_graph_equals_eager(blobs5, n_trials):
    x = torch.from_numpy(blobs5).cuda()
    graph = _d2_sample(x, 300, torch.Generator().manual_seed(0), n_trials=n_trials, cuda_graph=True)
    eager = _d2_sample(
        x, 300, torch.Generator().manual_seed(0), n_trials=n_trials, cuda_graph=False
    )
    assert torch.equal(graph, eager)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_greedy_potential_close_to_cpu(blobs5):
    # The picks can part at fp32 near-ties of the cdf, so compare the mean potential.
    x = torch.from_numpy(blobs5)
    cpu = [potential(x, kmeans_plusplus(x, K, seed=s)) for s in range(10)]
    gpu = [potential(x, kmeans_plusplus(x.cuda(), K, seed=s).cpu()) for s in range(10)]
    assert math.isclose(np.mean(gpu), np.mean(cpu), rel_tol=0.05)
