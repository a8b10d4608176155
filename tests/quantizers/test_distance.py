"""The chunked torch nearest-code search equals the naive dense search, at any memory budget."""

import os
import warnings

import pytest
import torch

from vqlab.quantizers.distance import (
    CPU_TILE_BYTES,
    CPU_TILE_COLS,
    DEFAULT_MAX_BYTES,
    NearestCode,
    nearest_code,
    nearest_code_torch,
    tile_shape,
)


def naive(x: torch.Tensor, codebook: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Dense fp64 reference: (N,) argmin of cdist and (N,) squared distances."""
    d = torch.cdist(x.double(), codebook.double()) ** 2  # (N, K)
    values, indices = d.min(dim=1)
    return indices, values


# budgets in bytes for N=37, K=53: one distance (1x1 tiles), 7 codes (1 row, ragged columns),
# one full row, three rows, several ragged row tiles, and the default (everything at once)
BUDGETS = [4, 4 * 7, 4 * 53, 4 * 53 * 3, 4 * 53 * 10 + 12, DEFAULT_MAX_BYTES]


@pytest.mark.parametrize("max_bytes", BUDGETS)
def test_chunked_equals_naive_cdist(max_bytes):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(37, 6, generator=g)
    codebook = torch.randn(53, 6, generator=g)
    res = nearest_code_torch(x, codebook, max_bytes=max_bytes)
    ref_i, ref_d = naive(x, codebook)
    assert isinstance(res, NearestCode)
    assert res.indices.dtype == torch.long and res.distances.dtype == torch.float32
    assert torch.equal(res.indices, ref_i)
    assert torch.equal(res.indices, torch.cdist(x, codebook).argmin(dim=1))
    torch.testing.assert_close(res.distances.double(), ref_d, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    ("n", "k", "max_bytes", "expected"),
    [
        (10, 20, 4, (1, 1)),
        (10, 20, 4 * 20, (1, 20)),
        (10, 20, 4 * 45, (2, 20)),
        (10, 20, 4 * 7, (1, 7)),
        (3, 20, 10**9, (3, 20)),
    ],
)
def test_tile_shape_fits_budget(n, k, max_bytes, expected):
    rows, cols = tile_shape(n, k, max_bytes)
    assert (rows, cols) == expected
    assert rows * cols * 4 <= max_bytes


@pytest.mark.parametrize(
    ("n", "k", "max_bytes", "max_cols", "expected"),
    [
        (10, 2000, 10**9, 512, (10, 512)),  # the column cap, all rows
        (10, 300, 10**9, 512, (10, 300)),  # K under the cap: whole rows
        (10, 2000, 4 * 1000, 512, (1, 512)),  # room for one capped row only
        (10, 2000, 4 * 100, 512, (1, 100)),  # budget below the cap: the budget wins
    ],
)
def test_tile_shape_column_cap(n, k, max_bytes, max_cols, expected):
    assert tile_shape(n, k, max_bytes, max_cols) == expected
    with pytest.raises(ValueError, match="max_cols"):
        tile_shape(n, k, max_bytes, 0)


def test_cpu_cache_sized_tiles_equal_naive():
    # K > CPU_TILE_COLS and N * 512 * 4 > CPU_TILE_BYTES: several row and column tiles on the
    # CPU even at the default budget; ragged on both sides
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2600, 5, generator=g)
    codebook = torch.randn(1300, 5, generator=g)
    assert 2600 * CPU_TILE_COLS * 4 > CPU_TILE_BYTES and 1300 > CPU_TILE_COLS
    res = nearest_code_torch(x, codebook)
    ref_i, ref_d = naive(x, codebook)
    assert torch.equal(res.indices, ref_i)
    torch.testing.assert_close(res.distances.double(), ref_d, rtol=1e-5, atol=1e-5)


def test_hand_computed_example():
    codebook = torch.tensor([[0.0, 0.0], [3.0, 0.0], [0.0, 4.0], [3.0, 4.0]])
    x = torch.tensor([[1.0, 1.0], [2.0, 3.5], [0.0, 5.0], [3.0, 0.0]])
    res = nearest_code_torch(x, codebook, max_bytes=8)
    assert res.indices.tolist() == [0, 3, 2, 1]
    # 1+1; 1+0.25; 0+1; exactly on code 1
    torch.testing.assert_close(res.distances, torch.tensor([2.0, 1.25, 1.0, 0.0]))


@pytest.mark.parametrize("max_bytes", [4, 8, 4 * 3, DEFAULT_MAX_BYTES])
def test_ties_go_to_the_lowest_index(max_bytes):
    # codes 2 and 5 are the same point, nearest to every x; code 0 and 4 tie at the midpoint
    codebook = torch.tensor(
        [[5.0, 0.0], [9.0, 9.0], [1.0, 1.0], [-9.0, 9.0], [-5.0, 0.0], [1.0, 1.0], [9.0, -9.0]]
    )
    x = torch.tensor([[1.0, 1.0], [1.5, 1.0], [0.0, 0.0], [0.0, -0.5]])
    res = nearest_code_torch(x, codebook, max_bytes=max_bytes)
    # (0, 0) and (0, -0.5): distance 2 and 2.25 to codes 2/5, 25 and 25.25 to codes 0/4
    assert res.indices.tolist() == [2, 2, 2, 2]
    far = torch.tensor([[0.0, 30.0]])  # equidistant from codes 1 and 3 (and nearest to them)
    assert nearest_code_torch(far, codebook, max_bytes=max_bytes).indices.tolist() == [1]


def test_distances_are_squared_l2_and_never_negative():
    g = torch.Generator().manual_seed(1)
    codebook = torch.randn(40, 16, generator=g) * 100.0
    x = torch.cat([codebook[:5], torch.randn(5, 16, generator=g)])  # some rows sit on a code
    res = nearest_code_torch(x, codebook, max_bytes=4 * 40 * 2)
    assert (res.distances >= 0).all()
    assert res.indices[:5].tolist() == [0, 1, 2, 3, 4]
    expected = ((x.double() - codebook.double()[res.indices]) ** 2).sum(1)
    torch.testing.assert_close(res.distances.double(), expected, rtol=1e-4, atol=0.5)


def test_large_codebook_small_budget():
    # K = 262,144 codes: a 1 MiB budget gives 1-row tiles, 256 KiB splits each row in four
    g = torch.Generator().manual_seed(2)
    x = torch.randn(64, 8, generator=g)
    codebook = torch.randn(262_144, 8, generator=g)
    ref_i, ref_d = naive(x, codebook)
    for max_bytes in (2**20, 2**18):
        res = nearest_code_torch(x, codebook, max_bytes=max_bytes)
        assert torch.equal(res.indices, ref_i)
        torch.testing.assert_close(res.distances.double(), ref_d, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_other_float_dtypes_score_in_fp32(dtype):
    g = torch.Generator().manual_seed(3)
    x = torch.randn(30, 5, generator=g).to(dtype)
    codebook = torch.randn(20, 5, generator=g).to(dtype)
    res = nearest_code_torch(x, codebook, max_bytes=64)
    assert res.distances.dtype == torch.float32
    assert torch.equal(res.indices, naive(x, codebook)[0])


def test_non_contiguous_inputs():
    g = torch.Generator().manual_seed(4)
    x = torch.randn(25, 12, generator=g)[:, ::2]  # (25, 6), stride 2 along D
    codebook = torch.randn(6, 31, generator=g).T  # (31, 6), column-major
    assert not x.is_contiguous() and not codebook.is_contiguous()
    res = nearest_code_torch(x, codebook, max_bytes=4 * 31)
    assert torch.equal(res.indices, naive(x, codebook)[0])


def test_empty_x_gives_empty_result():
    res = nearest_code_torch(torch.empty(0, 3), torch.randn(4, 3))
    assert res.indices.shape == (0,) and res.distances.shape == (0,)


@pytest.mark.parametrize(
    ("x", "codebook", "error", "match"),
    [
        (torch.randn(4), torch.randn(3, 4), ValueError, "shape"),
        (torch.randn(4, 2), torch.randn(3, 5), ValueError, "dimension mismatch"),
        (torch.randn(4, 2), torch.randn(0, 2), ValueError, "empty"),
        (torch.ones(4, 2, dtype=torch.long), torch.randn(3, 2), TypeError, "floating-point"),
    ],
)
def test_bad_inputs_raise(x, codebook, error, match):
    with pytest.raises(error, match=match):
        nearest_code_torch(x, codebook)


def test_budget_below_one_distance_raises():
    with pytest.raises(ValueError, match="max_bytes"):
        nearest_code_torch(torch.randn(2, 2), torch.randn(2, 2), max_bytes=3)


def test_dispatch_torch_backend_and_validation():
    g = torch.Generator().manual_seed(5)
    x, codebook = torch.randn(9, 3, generator=g), torch.randn(11, 3, generator=g)
    ref = nearest_code_torch(x, codebook)
    for backend in ("auto", "torch"):
        for precision in ("exact", "fast"):  # torch computes exact for both
            res = nearest_code(x, codebook, backend=backend, precision=precision)
            assert torch.equal(res.indices, ref.indices)
            assert torch.equal(res.distances, ref.distances)
    with pytest.raises(ValueError, match="backend"):
        nearest_code(x, codebook, backend="cuda")
    with pytest.raises(ValueError, match="precision"):
        nearest_code(x, codebook, precision="half")


@pytest.mark.skipif(
    os.environ.get("TRITON_INTERPRET") == "1", reason="the interpreter runs triton on the CPU"
)
def test_triton_backend_on_cpu_tensors_is_a_clear_error():
    with pytest.raises(RuntimeError, match="triton"):
        nearest_code(torch.randn(2, 2), torch.randn(3, 2), backend="triton")


def test_auto_backend_rule(monkeypatch):
    """CPU always torch; on CUDA the kernel, except exact searches above the measured
    crossover D (fast searches take the kernel at every D)."""
    from vqlab.quantizers import distance

    assert distance.auto_backend("cpu", 32, "exact") == "torch"
    monkeypatch.setattr(distance, "triton_available", lambda: True)
    limit = distance.AUTO_TRITON_EXACT_MAX_D
    assert distance.auto_backend("cpu", 32, "fast") == "torch"
    assert distance.auto_backend("cuda", limit, "exact") == "triton"
    assert distance.auto_backend("cuda", limit + 1, "exact") == "torch"
    assert distance.auto_backend("cuda", 512, "fast") == "triton"
    monkeypatch.setattr(distance, "triton_available", lambda: False)
    assert distance.auto_backend("cuda", 32, "fast") == "torch"


def test_auto_falls_back_to_torch_once_when_triton_fails(monkeypatch):
    """A Triton build/launch error under backend="auto" warns once and answers with torch;
    later auto calls skip the kernel; backend="triton" and non-Triton errors still raise."""
    pytest.importorskip("triton")
    from vqlab.quantizers import distance
    from vqlab.quantizers.ops import triton_nearest

    class FakeCompilationError(Exception):
        pass

    FakeCompilationError.__module__ = "triton.compiler.errors"
    calls = []

    def broken(x, codebook, precision="exact", **kwargs):
        calls.append(precision)
        raise FakeCompilationError("ptxas fatal: made up for this test\nsecond line")

    real_auto = distance.auto_backend
    monkeypatch.setattr(distance, "_triton_failed", None)
    monkeypatch.setattr(distance, "triton_available", lambda: True)
    monkeypatch.setattr(distance, "auto_backend", lambda dev, d, p: real_auto("cuda", d, p))
    monkeypatch.setattr(triton_nearest, "nearest_code_triton", broken)
    g = torch.Generator().manual_seed(6)
    x, codebook = torch.randn(20, 4, generator=g), torch.randn(7, 4, generator=g)
    ref = nearest_code_torch(x, codebook)
    with pytest.warns(RuntimeWarning, match="FakeCompilationError: ptxas fatal"):
        res = nearest_code(x, codebook, precision="fast")
    assert torch.equal(res.indices, ref.indices) and calls == ["fast"]
    assert distance.auto_backend("cuda", 4, "fast") == "torch"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        again = nearest_code(x, codebook, precision="fast")  # no second warning, no kernel
    assert torch.equal(again.indices, ref.indices) and calls == ["fast"]
    with pytest.raises(FakeCompilationError):
        nearest_code(x, codebook, backend="triton")

    def wrong(x, codebook, precision="exact", **kwargs):
        raise ValueError("not Triton's")

    monkeypatch.setattr(distance, "_triton_failed", None)
    monkeypatch.setattr(triton_nearest, "nearest_code_triton", wrong)
    with pytest.raises(ValueError, match="not Triton's"):
        nearest_code(x, codebook)


def test_cpu_tiles_keep_the_first_of_equal_codes_across_tiles():
    # 1,300 codes: three CPU column tiles (512, 512, 276). Each row sits next to a planted code;
    # an exact copy of it in a later tile ties and must lose to the lower index, and rows whose
    # code is in the first tile must keep it while later tiles improve other rows.
    g = torch.Generator().manual_seed(5)
    codebook = torch.randn(1300, 4, generator=g) * 10.0
    targets = [3, 700, 1299, 520, 511, 512, 0]
    codebook[1100] = codebook[3]
    codebook[1200] = codebook[700]
    codebook[1024] = codebook[512]
    x = codebook[targets] + 1e-3 * torch.randn(len(targets), 4, generator=g)
    res = nearest_code_torch(x, codebook)
    assert res.indices.tolist() == targets
    ref_i, ref_d = naive(x, codebook)
    assert torch.equal(res.indices, ref_i)
    # distances near 4e-6 next to ||x||^2 ~ 400: fp32 cancellation, so an absolute tolerance
    torch.testing.assert_close(res.distances.double(), ref_d, rtol=0, atol=1e-3)


def test_augmented_operands_give_the_partial_distance():
    from vqlab.quantizers.nearest_torch import augmented_operands

    x = torch.tensor([[1.0, 2.0], [0.0, -1.0]])
    c = torch.tensor([[3.0, 0.0], [1.0, 1.0], [0.0, 0.0]])
    xa, ca = augmented_operands(x, c)
    assert xa.shape == (2, 3) and ca.shape == (3, 3)
    # ||c||^2 - 2 x.c by hand: row 0: 9 - 6, 2 - 6, 0; row 1: 9 - 0, 2 + 2, 0
    torch.testing.assert_close(xa @ ca.T, torch.tensor([[3.0, -4.0, 0.0], [9.0, 4.0, 0.0]]))


@pytest.mark.parametrize("d", [1, 64, 65, 130])
def test_cpu_search_equals_naive_on_both_sides_of_the_augmented_width(d):
    # AUGMENT_MAX_D = 64: D <= 64 scores [x, 1] @ [-2c, ||c||^2].T, D > 64 addmm with the norms;
    # 1,100 codes make three column tiles, 2,100 rows two row tiles at D = 130
    from vqlab.quantizers.nearest_torch import AUGMENT_MAX_D

    assert AUGMENT_MAX_D == 64
    g = torch.Generator().manual_seed(d)
    x = torch.randn(2100, d, generator=g)
    codebook = torch.randn(1100, d, generator=g)
    res = nearest_code_torch(x, codebook)
    ref_i, ref_d = naive(x, codebook)
    # random codes in few dims tie within fp32 rounding now and then: the pick must be as near
    # as the fp64 nearest up to that rounding, and the same code almost always
    picked = (x.double() - codebook.double()[res.indices]).pow(2).sum(1)
    slack = 1e-6 * (x.double().pow(2).sum(1) + codebook.double().pow(2).sum(1).max())
    assert (picked <= ref_d + slack).all()
    assert (res.indices == ref_i).double().mean() > 0.99
    torch.testing.assert_close(res.distances.double(), ref_d, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("cols", [1, 63, 64, 128, 130, 512, 1024])
def test_row_min_equals_min_dim1_ties_included(cols):
    # small integers: many exact ties, inside one chunk and across chunks; the first
    # occurrence must win as in d.min(dim=1), and widths that are no multiple of the chunk
    # take the plain path
    from vqlab.quantizers.nearest_torch import ARGMIN_CHUNK, row_min

    assert ARGMIN_CHUNK == 64
    g = torch.Generator().manual_seed(cols)
    d = torch.randint(0, 6, (300, cols), generator=g).float()
    d[0] = 5.0
    d[0, -1] = 0.0  # the minimum in the last column
    values, indices = row_min(d)
    ref = d.min(dim=1)
    assert torch.equal(values, ref.values) and torch.equal(indices, ref.indices)
    assert indices.dtype == torch.long and indices[0] == cols - 1
