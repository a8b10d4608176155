"""Tests of vqlab.quantizers.kmeans_stream: reservoir sampling."""

from __future__ import annotations

import pytest
import torch

from vqlab.quantizers.kmeans_stream import ReservoirSampler


@pytest.fixture(scope="module")
def data() -> torch.Tensor:
    return torch.randn(1000, 4, generator=torch.Generator().manual_seed(0))


def splits(x: torch.Tensor) -> list[torch.Tensor]:
    """Uneven batches, one of a single row and one empty."""
    return [x[:7], x[7:300], x[300:301], x[301:301], x[301:]]


def bottom_k_reference(x: torch.Tensor, size: int, seed: int) -> torch.Tensor:
    """In-memory rule: one uniform key per row, keep the ``size`` smallest, in row order."""
    keys = torch.rand(
        x.shape[0], generator=torch.Generator().manual_seed(seed), dtype=torch.float64
    )
    return x[torch.sort(torch.argsort(keys)[:size]).values]


@pytest.mark.parametrize("size", [1, 5, 299, 999, 1000, 5000])
def test_sample_equals_in_memory_rule_for_any_batching(data, size):
    streamed = ReservoirSampler(size, seed=3)
    for b in splits(data):
        streamed.add(b)
    whole = ReservoirSampler(size, seed=3)
    whole.add(data)
    ref = bottom_k_reference(data, size, 3)
    assert torch.equal(streamed.sample(), ref) and torch.equal(whole.sample(), ref)
    assert streamed.seen == 1000 and len(streamed) == min(size, 1000)


def test_big_reservoir_holds_the_data_in_order(data):
    s = ReservoirSampler(2000, seed=0)
    for b in splits(data):
        s.add(b)
    assert torch.equal(s.sample(), data)


def test_sample_is_uniform():
    # 10 rows, keep 3: every row is in the sample with probability 0.3.
    x = torch.arange(10.0).unsqueeze(1)
    hits = torch.zeros(10)
    trials = 1500
    for seed in range(trials):
        s = ReservoirSampler(3, seed=seed)
        s.add(x[:4])
        s.add(x[4:])
        hits[s.sample().long().flatten()] += 1
    # binomial std is sqrt(0.3 * 0.7 / 1500) ~ 0.012; allow 4 sigma
    assert torch.all((hits / trials - 0.3).abs() < 0.05)


def test_rows_are_stored_detached_in_first_dtype():
    s = ReservoirSampler(4)
    s.add(torch.randn(3, 2, requires_grad=True).half())
    s.add(torch.randn(3, 2))
    out = s.sample()
    assert out.dtype == torch.float16 and not out.requires_grad and out.shape == (4, 2)


@pytest.mark.parametrize(
    ("batch", "error"),
    [
        (torch.randn(3, 2, 2), ValueError),
        (torch.ones(3, 4, dtype=torch.long), ValueError),
        ([[1.0, 2.0, 3.0, 4.0]], TypeError),
        (torch.randn(3, 5), ValueError),
    ],
)
def test_bad_batches_are_rejected(batch, error):
    s = ReservoirSampler(10)
    s.add(torch.randn(2, 4))
    with pytest.raises(error):
        s.add(batch)


def test_bad_arguments_are_rejected(data):
    with pytest.raises(ValueError, match="size"):
        ReservoirSampler(0)
