"""Tests of vqlab.quantizers.kmeans: hand-computed traces, scikit-learn parity, policies."""

from __future__ import annotations

import pytest
import torch
from sklearn.cluster import KMeans

from vqlab.quantizers.distance import nearest_code
from vqlab.quantizers.kmeans import (
    _d2_sample,
    _reseed_empty,
    kmeans,
    kmeans_parallel,
    kmeans_plusplus,
)


def blobs(per_blob: int, n_blobs: int, dim: int, spread: float = 50.0, seed: int = 0):
    """(per_blob * n_blobs, dim) points: unit-std Gaussians around means in [-spread, spread]."""
    g = torch.Generator().manual_seed(seed)
    means = (torch.rand(n_blobs, dim, generator=g) * 2 - 1) * spread
    noise = torch.randn(n_blobs * per_blob, dim, generator=g)
    return means.repeat_interleave(per_blob, 0) + noise


def rows_of(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(len(a),) bool: row i of ``a`` is exactly equal to some row of ``b`` (small inputs)."""
    return (a[:, None, :] == b[None, :, :]).all(-1).any(1)


@pytest.fixture(scope="module")
def x_blobs() -> torch.Tensor:
    return blobs(200, 16, 8)


def test_hand_computed_trace():
    # Start both centroids in the left pair: {0,1,10,11} -> step 1 gives centroids 0 and 22/3,
    # step 2 gives 0.5 and 10.5, which is the optimum with inertia 4 * 0.25 = 1.
    x = torch.tensor([[0.0], [1.0], [10.0], [11.0]])
    res = kmeans(x, 2, iters=3, init=torch.tensor([[0.0], [1.0]]))
    assert res.inertia == pytest.approx([181.0, 194.0 / 9.0, 1.0, 1.0], rel=1e-5)
    assert torch.allclose(res.centroids, torch.tensor([[0.5], [10.5]]))
    assert res.counts.tolist() == [2, 2]
    assert res.centroids.dtype == torch.float32 and res.counts.dtype == torch.int64


def test_hand_computed_default_init():
    x = torch.tensor([[0.0], [1.0], [10.0], [11.0]])
    res = kmeans(x, 2)
    assert sorted(res.centroids.flatten().tolist()) == [0.5, 10.5]
    assert len(res.inertia) == 21 and res.inertia[-1] == pytest.approx(1.0)


@pytest.mark.parametrize("k", [16, 40])
def test_matches_sklearn_with_same_init(x_blobs, k):
    init = kmeans_plusplus(x_blobs, k, seed=0)
    ours = kmeans(x_blobs, k, iters=20, init=init)
    ref = KMeans(k, init=init.numpy(), n_init=1, max_iter=20, algorithm="lloyd", tol=0)
    ref.fit(x_blobs.numpy())
    assert ours.inertia[-1] == pytest.approx(ref.inertia_, rel=0.01)


def test_matches_sklearn_each_with_own_kmeanspp(x_blobs):
    ours = kmeans(x_blobs, 16, iters=20, seed=0)
    ref = KMeans(16, n_init=1, max_iter=20, algorithm="lloyd", tol=0, random_state=0)
    ref.fit(x_blobs.numpy())
    assert ours.inertia[-1] == pytest.approx(ref.inertia_, rel=0.01)


def test_result_is_consistent(x_blobs):
    res = kmeans(x_blobs, 24, iters=10, seed=1)
    near = nearest_code(x_blobs, res.centroids)
    assert res.counts.sum().item() == x_blobs.shape[0]
    assert torch.equal(res.counts, torch.bincount(near.indices, minlength=24))
    assert len(res.inertia) == 11
    assert res.inertia[-1] == pytest.approx(near.distances.double().sum().item(), rel=1e-6)
    # Lloyd never raises the inertia (up to fp32 rounding)
    assert all(b <= a * (1 + 1e-6) for a, b in zip(res.inertia[:-1], res.inertia[1:], strict=True))


@pytest.mark.parametrize("init", ["kmeans++", "kmeans||", "random"])
def test_seeded_runs_are_bitwise_reproducible(x_blobs, init):
    a = kmeans(x_blobs, 20, iters=5, seed=3, init=init)
    b = kmeans(x_blobs, 20, iters=5, seed=3, init=init)
    c = kmeans(x_blobs, 20, iters=0, seed=4, init=init)
    assert torch.equal(a.centroids, b.centroids) and torch.equal(a.counts, b.counts)
    assert a.inertia == b.inertia
    assert not torch.equal(kmeans(x_blobs, 20, iters=0, seed=3, init=init).centroids, c.centroids)


def test_string_init_equals_tensor_init_and_generator(x_blobs):
    by_name = kmeans(x_blobs, 12, iters=5, seed=7)
    by_tensor = kmeans(x_blobs, 12, iters=5, init=kmeans_plusplus(x_blobs, 12, seed=7))
    by_gen = kmeans(x_blobs, 12, iters=5, generator=torch.Generator().manual_seed(7))
    assert torch.equal(by_name.centroids, by_tensor.centroids)
    assert torch.equal(by_name.centroids, by_gen.centroids)


def test_kmeans_plusplus_picks_distinct_rows():
    # Once a row is picked its D² weight is 0, so k = N picks every row exactly once.
    x = torch.randn(50, 3, generator=torch.Generator().manual_seed(0))
    c = kmeans_plusplus(x, 50, seed=0)
    assert torch.equal(torch.sort(nearest_code(c, x).indices).values, torch.arange(50))


def test_empty_cluster_is_reseeded_hand_computed():
    # The centroid at 100 wins no point; it moves to the farthest point (10, at squared
    # distance 100 from centroid 0) while centroid 0 becomes the mean 2.5 of all four points.
    x = torch.tensor([[0.0], [0.0], [0.0], [10.0]])
    res = kmeans(x, 2, iters=3, init=torch.tensor([[0.0], [100.0]]))
    assert res.inertia == pytest.approx([100.0, 18.75, 0.0, 0.0])
    assert res.centroids.flatten().tolist() == [0.0, 10.0]
    assert res.counts.tolist() == [3, 1]


def test_reseed_helper_farthest_first_in_cluster_order():
    x = torch.tensor([[0.0], [1.0], [5.0], [3.0], [9.0]])
    centroids = torch.tensor([[0.0], [7.0], [8.0], [-1.0]])
    counts = torch.tensor([3, 0, 2, 0])
    dist = torch.tensor([0.0, 1.0, 4.0, 9.0, 1.0])
    out = _reseed_empty(centroids, counts, x, dist)
    # empties 1 and 3 take the farthest (row 3, d=9) then the next (row 2, d=4)
    assert out.flatten().tolist() == [0.0, 3.0, 8.0, 5.0]
    assert centroids.flatten().tolist() == [0.0, 7.0, 8.0, -1.0]  # input untouched


@pytest.mark.parametrize("init", ["kmeans++", "kmeans||", "random"])
def test_fewer_distinct_points_than_k(init):
    distinct = torch.tensor([[0.0, 0.0], [50.0, 0.0], [0.0, 50.0]])
    x = distinct.repeat(10, 1)  # 30 rows, 3 distinct
    res = kmeans(x, 5, iters=4, seed=0, init=init)
    assert torch.isfinite(res.centroids).all()
    assert res.counts.sum().item() == 30
    assert res.inertia[-1] == 0.0
    # every centroid sits on a data point, and every data point has a centroid on it
    assert rows_of(res.centroids, distinct).all() and rows_of(distinct, res.centroids).all()


def test_k_greater_than_n_names_both_numbers():
    with pytest.raises(ValueError, match=r"k=5 .* only 4"):
        kmeans(torch.randn(4, 2), 5)


@pytest.mark.parametrize(
    ("args", "kwargs", "error"),
    [
        ((torch.randn(10, 2), 0), {}, ValueError),
        ((torch.randn(10, 2), 2.0), {}, TypeError),
        ((torch.randn(10, 2), 2, -1), {}, ValueError),
        ((torch.randn(10), 2), {}, ValueError),
        ((torch.arange(20).view(10, 2), 2), {}, TypeError),
        ((torch.full((10, 2), float("nan")), 2), {}, ValueError),
        (([[0.0, 1.0]], 1), {}, TypeError),
        ((torch.randn(10, 2), 2), {"init": "kmeans"}, ValueError),
        ((torch.randn(10, 2), 2), {"init": torch.zeros(3, 2)}, ValueError),
        ((torch.randn(10, 2), 2), {"init": [[0.0, 0.0], [1.0, 1.0]]}, TypeError),
        ((torch.randn(10, 2), 2), {"generator": 0}, TypeError),
    ],
)
def test_bad_input_is_rejected(args, kwargs, error):
    with pytest.raises(error):
        kmeans(*args, **kwargs)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_input_is_computed_in_fp32(x_blobs, dtype):
    low = x_blobs.to(dtype)
    res = kmeans(low, 16, iters=5, seed=0)
    ref = kmeans(low.float(), 16, iters=5, seed=0)
    assert res.centroids.dtype == torch.float32
    assert torch.equal(res.centroids, ref.centroids) and res.inertia == ref.inertia


def test_small_tiles_give_the_same_clustering(x_blobs):
    init = kmeans_plusplus(x_blobs, 16, seed=0)
    small = kmeans(x_blobs, 16, iters=5, init=init, max_bytes=4096)
    big = kmeans(x_blobs, 16, iters=5, init=init)
    assert torch.equal(small.counts, big.counts)
    assert torch.allclose(small.centroids, big.centroids, atol=1e-5)


@pytest.mark.parametrize("k", [16, 40, 100])
def test_kmeans_parallel_close_to_kmeanspp(x_blobs, k):
    # 3200 points: about 5 rounds * 2k candidates, so for k <= 100 the candidate path runs.
    pp = sum(kmeans(x_blobs, k, iters=20, seed=s).inertia[-1] for s in range(3))
    par = sum(kmeans(x_blobs, k, iters=20, seed=s, init="kmeans||").inertia[-1] for s in range(3))
    assert par == pytest.approx(pp, rel=0.03)


def test_kmeans_parallel_returns_data_rows():
    x = blobs(50, 8, 4)
    c = kmeans_parallel(x, 20, seed=0, rounds=2, oversampling=1.0)
    assert c.shape == (20, 4)
    assert rows_of(c, x).all() and torch.unique(c, dim=0).shape[0] == 20
    with pytest.raises(ValueError, match="rounds"):
        kmeans_parallel(x, 20, rounds=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu(x_blobs):
    cpu = kmeans(x_blobs, 16, iters=10, seed=0, init="random")
    gpu = kmeans(x_blobs.cuda(), 16, iters=10, seed=0, init="random")
    assert gpu.centroids.device.type == "cuda"
    assert torch.equal(gpu.counts.cpu(), cpu.counts)
    assert torch.allclose(gpu.centroids.cpu(), cpu.centroids, atol=1e-4)
    assert gpu.inertia[-1] == pytest.approx(cpu.inertia[-1], rel=1e-4)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("k", [30, 300])  # 30: no full graph fits, all picks run eagerly
def test_cuda_graph_picks_equal_eager_picks(k):
    x = blobs(100, 64, 16).cuda()
    graph = _d2_sample(x, k, torch.Generator().manual_seed(0), cuda_graph=True)
    eager = _d2_sample(x, k, torch.Generator().manual_seed(0), cuda_graph=False)
    assert torch.equal(graph, eager)
    assert torch.unique(graph).numel() == k
