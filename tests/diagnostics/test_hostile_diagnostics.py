"""Hostile and careless input to diagnose() and the diagnostics functions (property-based).

Each case gives defined numbers (never NaN: checked against naive float64 references where
there is one) or raises a ``TypeError`` / ``ValueError`` naming the argument. Degenerate but
valid input (one code, one embedding, one class, identical rows) is a result, not an error;
see :func:`vqlab.diagnostics.diagnose` for the conventions.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from vqlab.diagnostics import (
    code_counts,
    dead_codes,
    diagnose,
    effective_dim,
    effective_rank,
    mean_nearest_distance,
    mean_pairwise_cos_dist,
    mean_pairwise_l2,
    mode_stats,
    perplexity,
    usage,
)

FLOATS = [torch.float16, torch.bfloat16, torch.float32, torch.float64]
CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def rows(n: int, d: int, seed: int, dtype=torch.float32, *, strided: bool = False):
    gen = torch.Generator().manual_seed(seed)
    x = (torch.randn(n, d, generator=gen) * 2).to(dtype)
    if strided:  # same values, non-contiguous: a transposed buffer
        x = x.T.contiguous().T
    return x


def no_nan(metrics: dict) -> None:
    for key, value in metrics.items():
        assert isinstance(value, (int, float)), key
        assert value == value, f"{key} is NaN"
        if key not in ("coverage_ratio", "class_separation"):  # the documented inf cases
            assert math.isfinite(value), key
    json.dumps(metrics)


# ------------------------------------------------------------------------------- diagnose()
@given(
    k=st.integers(1, 12),
    n=st.integers(1, 20),
    d=st.integers(1, 5),
    dtype=st.sampled_from(FLOATS),
    strided=st.booleans(),
    collapse=st.sampled_from(["none", "codebook", "embeddings"]),
    seed=st.integers(0, 2**16),
)
def test_diagnose_is_defined_and_matches_naive(k, n, d, dtype, strided, collapse, seed):
    codebook = rows(k, d, seed, dtype, strided=strided)
    z_e = rows(n, d, seed + 1, dtype, strided=strided)
    if collapse == "codebook":
        codebook = codebook[:1].expand(k, d)  # every code the same vector (stride 0)
    elif collapse == "embeddings":
        z_e = z_e[:1].repeat(n, 1)
    idx = torch.cdist(z_e.double(), codebook.double()).argmin(1)
    out = diagnose(codebook=codebook, embeddings=z_e, indices=idx)
    no_nan(out)
    c64, z64 = codebook.double(), z_e.double()
    naive_l2 = torch.pdist(c64).mean().item() if k > 1 else 0.0
    assert out["codebook_mean_l2"] == pytest.approx(naive_l2, rel=1e-6, abs=1e-9)
    assert 1.0 - 1e-9 <= out["perplexity"] <= k + 1e-9
    assert 0.0 < out["usage"] <= 1.0 and 0 <= out["dead_codes"] < k
    assert 0 <= out["effective_dim"] <= min(k, d)
    assert -1e-9 <= out["codebook_mean_cos_dist"] <= 2 + 1e-9
    naive_q = ((z64 - c64[idx]) ** 2).sum(1).mean().item()
    assert out["quant_mse"] == pytest.approx(naive_q, rel=1e-9, abs=1e-12)
    # the nearest code is never farther than the assigned one (Jensen: mean dist <= rms dist)
    assert out["mean_nearest_distance"] <= math.sqrt(naive_q) * (1 + 1e-5) + 1e-5
    if collapse == "embeddings" or n == 1:
        assert out["embedding_mean_l2"] == 0.0
        assert out["coverage_ratio"] == (math.inf if out["codebook_mean_l2"] > 0 else 0.0)


@given(
    k=st.integers(2, 10),
    n=st.integers(2, 16),
    d=st.integers(1, 4),
    dtype=st.sampled_from([torch.float16, torch.bfloat16]),
    seed=st.integers(0, 2**16),
)
def test_low_precision_gives_exactly_the_numbers_of_its_float64_copy(k, n, d, dtype, seed):
    codebook, z_e = rows(k, d, seed, dtype), rows(n, d, seed + 1, dtype)
    idx = torch.randint(0, k, (n,), generator=torch.Generator().manual_seed(seed))
    low = diagnose(codebook=codebook, embeddings=z_e, indices=idx)
    high = diagnose(codebook=codebook.double(), embeddings=z_e.double(), indices=idx)
    assert low == pytest.approx(high, rel=1e-12)


@settings(max_examples=15)
@given(
    n=st.integers(2, 16),
    classes=st.integers(1, 5),
    seed=st.integers(0, 2**16),
)
def test_labels_with_too_few_classes_leave_the_class_metrics_out(n, classes, seed):
    gen = torch.Generator().manual_seed(seed)
    z_e = torch.randn(n, 3, generator=gen)
    labels = torch.randint(0, classes, (n,), generator=gen)
    codebook = torch.randn(4, 3, generator=gen)
    idx = torch.cdist(z_e, codebook).argmin(1)
    out = diagnose(codebook=codebook, embeddings=z_e, indices=idx, labels=labels)
    no_nan(out)
    sizes = torch.unique(labels, return_counts=True)[1]
    assert ("class_separation" in out) == (sizes.numel() >= 2)
    assert ("probe_accuracy" in out) == (sizes.numel() >= 2 and bool((sizes >= 2).any()))
    assert "embedding_effective_rank" in out and "modes_with_tokens" in out


@given(
    which=st.sampled_from(["codebook", "embeddings", "reconstructions", "inputs", "means"]),
    bad=st.sampled_from([float("nan"), float("inf"), float("-inf")]),
    dtype=st.sampled_from(FLOATS),
    data=st.data(),
)
def test_nan_or_inf_in_any_tensor_is_named(which, bad, dtype, data):
    gen = torch.Generator().manual_seed(0)
    args = {
        "codebook": torch.randn(4, 2, generator=gen).to(dtype),
        "embeddings": torch.randn(6, 2, generator=gen).to(dtype),
        "reconstructions": torch.randn(6, 2, generator=gen).to(dtype),
        "inputs": torch.randn(6, 2, generator=gen).to(dtype),
        "means": torch.randn(3, 2, generator=gen).to(dtype),
    }
    t = args[which]
    t[data.draw(st.integers(0, t.shape[0] - 1)), data.draw(st.integers(0, 1))] = bad
    kind = "NaN" if bad != bad else "Inf"
    with pytest.raises(ValueError, match=rf"^{which} contains {kind} \(1 of {t.numel()} values"):
        diagnose(**args, mode_radius=1.0)


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"codebook": [[0.0, 1.0]]}, TypeError, "codebook must be a torch.Tensor"),
        ({"codebook": torch.ones(3, 2, dtype=torch.long)}, TypeError, "codebook must have a floa"),
        ({"codebook": torch.ones(3, 2, dtype=torch.bool)}, TypeError, "floating-point"),
        ({"codebook": torch.zeros(0, 2)}, ValueError, "codebook needs at least 1 row; got 0"),
        ({"codebook": torch.zeros(3, 0)}, ValueError, r"codebook has zero columns \(D=0\)"),
        ({"codebook": torch.zeros(3)}, ValueError, r"codebook must have shape \(N, D\)"),
        ({"codebook": torch.zeros(3, 2, device="meta")}, ValueError, "codebook is a meta tensor"),
        ({"embeddings": torch.zeros(0, 2)}, ValueError, "embeddings needs at least 1 row"),
        ({"embeddings": torch.zeros(4, 3)}, ValueError, "embeddings have D=3 but the codebook"),
        ({"embeddings": torch.zeros(4, 2, dtype=torch.int32)}, TypeError, "embeddings must have"),
        ({"indices": torch.zeros(0, dtype=torch.long)}, ValueError, r"indices is empty \(N=0\)"),
        ({"indices": torch.zeros(4)}, TypeError, "indices must have an integer dtype"),
        ({"indices": torch.tensor([0, 9])}, ValueError, r"indices must lie in \[0, 3\)"),
        ({"indices": torch.tensor([-1, 0])}, ValueError, r"indices must lie in \[0, 3\)"),
        ({"indices": torch.zeros(2, 2, dtype=torch.long)}, ValueError, r"must be a \(N,\) tensor"),
        ({"indices": [0, 1]}, TypeError, "indices must be a torch.Tensor"),
        ({"embedding_sample": "8"}, TypeError, "embedding_sample must be an int"),
        ({"embedding_sample": 1}, ValueError, "embedding_sample must be >= 2"),
        ({"seed": 0.5}, TypeError, "seed must be an int"),
        ({"mode_radius": "1"}, TypeError, "mode_radius must be a number"),
        ({"mode_radius": float("nan")}, ValueError, "mode_radius must be finite"),
        ({"mode_radius": -1.0}, ValueError, "mode_radius must be > 0"),
        ({"inputs": torch.zeros(2, 2)}, ValueError, "inputs without what it needs"),
        (
            {"reconstructions": torch.zeros(2, 2), "inputs": torch.zeros(3, 2)},
            ValueError,
            "must have the same shape",
        ),
        (
            {"reconstructions": torch.zeros(0, 2), "inputs": torch.zeros(0, 2)},
            ValueError,
            "at least one element",
        ),
        (
            {"reconstructions": torch.zeros(2, 2, dtype=torch.long), "inputs": torch.zeros(2, 2)},
            TypeError,
            "reconstructions must have a floating-point",
        ),
    ],
)
def test_bad_arguments_name_the_problem(kwargs, error, message):
    args = {"codebook": torch.randn(3, 2), **kwargs}
    with pytest.raises(error, match=message):
        diagnose(**args)


def test_indices_without_a_codebook_and_empty_call():
    with pytest.raises(ValueError, match="indices without a codebook"):
        diagnose(codebook=None, indices=torch.zeros(2, dtype=torch.long))
    assert diagnose(codebook=None) == {}


# ------------------------------------------------------------------ the functions one by one
@given(
    counts=st.lists(st.integers(0, 50), min_size=1, max_size=30),
    as_float=st.booleans(),
)
def test_usage_metrics_are_in_range_or_refuse_zero_counts(counts, as_float):
    c = torch.tensor(counts, dtype=torch.float64 if as_float else torch.long)
    k = len(counts)
    if sum(counts) == 0:
        with pytest.raises(ValueError, match="all-zero counts"):
            perplexity(c)
    else:
        assert 1.0 - 1e-9 <= perplexity(c) <= k + 1e-9
    assert 0.0 <= usage(c) <= 1.0 and dead_codes(c) == counts.count(0)


@pytest.mark.parametrize(
    "counts, error, message",
    [
        (torch.tensor([1.0, float("nan")]), ValueError, "non-finite counts"),
        (torch.tensor([1, -2]), ValueError, "negative counts"),
        (torch.tensor([True, False]), TypeError, "integer or float counts"),
        (torch.zeros(0), ValueError, r"shape \(K,\) with K >= 1"),
        (torch.ones(2, 2), ValueError, r"shape \(K,\) with K >= 1"),
        ([1, 2], TypeError, "torch.Tensor"),
        (torch.ones(2, device="meta"), ValueError, "meta tensor"),
    ],
)
def test_bad_counts(counts, error, message):
    for fn in (perplexity, usage, dead_codes):
        with pytest.raises(error, match=message):
            fn(counts)


@given(
    values=st.lists(st.integers(-3, 12), max_size=30),
    k=st.integers(1, 10),
    dtype=st.sampled_from([torch.int64, torch.int32, torch.int16, torch.uint8]),
)
def test_code_counts_counts_or_names_the_range(values, k, dtype):
    if dtype == torch.uint8:
        values = [v for v in values if v >= 0]
    idx = torch.tensor(values, dtype=dtype)
    if values and (min(values) < 0 or max(values) >= k):
        with pytest.raises(ValueError, match=rf"indices must lie in \[0, {k}\)"):
            code_counts(idx, k)
    else:
        counts = code_counts(idx, k)
        assert counts.tolist() == [values.count(i) for i in range(k)]


@given(
    n=st.integers(1, 20),
    d=st.integers(1, 6),
    rank=st.integers(0, 6),
    dtype=st.sampled_from(FLOATS),
    seed=st.integers(0, 2**16),
)
def test_rank_metrics_stay_in_range(n, d, rank, dtype, seed):
    gen = torch.Generator().manual_seed(seed)
    r = min(rank, d)
    x = torch.randn(n, r, generator=gen) @ torch.randn(r, d, generator=gen) + 1.0  # rank <= r
    x = x.to(dtype)
    dim = effective_dim(x)
    assert isinstance(dim, int) and 0 <= dim <= min(n, d, max(r, 0) + 1)
    er = effective_rank(x)
    assert er == 0.0 or 1.0 - 1e-9 <= er <= min(n, d) + 1e-9
    if n >= 2:
        assert mean_pairwise_l2(x) >= 0 and 0 <= mean_pairwise_cos_dist(x) <= 2 + 1e-9


@given(
    n=st.integers(1, 20),
    k=st.integers(1, 10),
    d=st.integers(1, 4),
    x_dtype=st.sampled_from(FLOATS),
    c_dtype=st.sampled_from(FLOATS),
    seed=st.integers(0, 2**16),
)
def test_mean_nearest_distance_matches_cdist(n, k, d, x_dtype, c_dtype, seed):
    x, c = rows(n, d, seed, x_dtype, strided=True), rows(k, d, seed + 1, c_dtype)
    naive = torch.cdist(x.double(), c.double()).min(1).values.mean().item()
    assert mean_nearest_distance(x, c) == pytest.approx(naive, rel=1e-4, abs=1e-4)


@given(
    n=st.integers(1, 30),
    k=st.integers(1, 8),
    modes=st.integers(1, 5),
    seed=st.integers(0, 2**16),
)
def test_mode_stats_is_defined(n, k, modes, seed):
    gen = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, k, (n,), generator=gen)
    labels = torch.randint(0, modes, (n,), generator=gen)
    out = mode_stats(idx, labels, k)
    assert 1 <= out["modes_with_tokens"] <= min(modes, k)
    assert 0.0 <= out["mode_entropy"] <= math.log(modes) + 1e-9


@pytest.mark.parametrize(
    "fn, args, error, message",
    [
        (effective_dim, (torch.randn(3, 2), 0.0), ValueError, r"threshold must lie in \(0, 1\]"),
        (effective_dim, (torch.randn(3, 2), "0.9"), TypeError, "threshold must be a number"),
        (effective_rank, (torch.full((3, 2), float("nan")),), ValueError, "x contains NaN"),
        (mean_pairwise_l2, (torch.randn(1, 2),), ValueError, "at least 2 rows"),
        (
            mean_pairwise_l2,
            (torch.tensor([[1e300, 0.0], [0.0, 0.0]], dtype=torch.float64),),
            ValueError,
            "overflow float64",
        ),
        (mean_nearest_distance, (torch.randn(2, 2), torch.randn(2, 3)), ValueError, "D=3"),
        (mode_stats, (torch.tensor([0, 1]), torch.tensor([0]), 2), ValueError, r"\(2,\)"),
    ],
)
def test_function_bad_arguments(fn, args, error, message):
    with pytest.raises(error, match=message):
        fn(*args)


@CUDA
def test_tensors_on_two_devices_are_named():
    codebook = torch.randn(4, 2)
    with pytest.raises(ValueError, match="one device; got codebook on cpu, embeddings on cuda"):
        diagnose(codebook=codebook, embeddings=torch.randn(5, 2, device="cuda"))
    cuda = diagnose(codebook=codebook.cuda(), embeddings=torch.randn(5, 2).cuda())
    no_nan(cuda)
