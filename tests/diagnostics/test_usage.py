"""Usage metrics: hand-computed counts, perplexity bounds and invariants."""

import math

import numpy as np
import pytest
import torch

from vqlab.diagnostics import code_counts, dead_codes, perplexity, usage


def test_code_counts_hand_fixture_any_shape():
    indices = torch.tensor([[0, 2], [2, 3]])
    counts = code_counts(indices, 5)
    assert counts.dtype == torch.int64
    assert counts.tolist() == [1, 0, 2, 1, 0]


def test_code_counts_matches_python_count():
    gen = torch.Generator().manual_seed(0)
    indices = torch.randint(0, 13, (4, 7, 9), generator=gen)
    counts = code_counts(indices, 16)
    flat = indices.flatten().tolist()
    assert counts.tolist() == [flat.count(k) for k in range(16)]
    assert int(counts.sum()) == indices.numel()


def test_code_counts_empty_gives_zeros():
    assert code_counts(torch.zeros(0, dtype=torch.long), 3).tolist() == [0, 0, 0]


@pytest.mark.parametrize("bad", [[-1, 0], [0, 4]])
def test_code_counts_out_of_range_raises(bad):
    with pytest.raises(ValueError, match="indices must lie in"):
        code_counts(torch.tensor(bad), 4)


def test_code_counts_bad_types_raise():
    with pytest.raises(TypeError, match="integer dtype"):
        code_counts(torch.tensor([0.0, 1.0]), 4)
    with pytest.raises(TypeError, match="torch.Tensor"):
        code_counts([0, 1], 4)
    with pytest.raises(ValueError, match="codebook_size"):
        code_counts(torch.tensor([0]), 0)
    with pytest.raises(TypeError, match="codebook_size"):
        code_counts(torch.tensor([0]), 4.0)


def test_perplexity_uniform_is_codebook_size():
    assert perplexity(torch.full((64,), 5)) == pytest.approx(64.0, rel=1e-12)


def test_perplexity_single_code_is_one():
    counts = torch.zeros(64, dtype=torch.long)
    counts[17] = 1000
    assert perplexity(counts) == pytest.approx(1.0, abs=1e-12)


def test_perplexity_hand_value():
    # p = (1/4, 1/4, 1/2): H = 1.5 ln 2, so exp(H) = 2 ** 1.5.
    assert perplexity(torch.tensor([1, 0, 1, 2])) == pytest.approx(2**1.5, rel=1e-12)


def test_perplexity_scale_invariant_and_bounded():
    gen = torch.Generator().manual_seed(1)
    counts = torch.randint(0, 50, (100,), generator=gen)
    value = perplexity(counts)
    assert value == pytest.approx(perplexity(counts * 7), rel=1e-12)
    assert value == pytest.approx(perplexity(counts.double() / 3.0), rel=1e-12)
    assert 1.0 <= value <= int((counts > 0).sum())


def test_perplexity_matches_numpy_reference():
    gen = torch.Generator().manual_seed(2)
    counts = torch.randint(0, 9, (40,), generator=gen)
    p = counts.double().numpy() / counts.sum().item()
    p = p[p > 0]
    expected = math.exp(-(p * np.log(p)).sum())
    assert perplexity(counts) == pytest.approx(expected, rel=1e-12)


def test_perplexity_all_zero_raises():
    with pytest.raises(ValueError, match="all-zero"):
        perplexity(torch.zeros(8, dtype=torch.long))


def test_bad_counts_raise():
    with pytest.raises(ValueError, match="negative"):
        perplexity(torch.tensor([1, -1]))
    with pytest.raises(ValueError, match="shape"):
        usage(torch.ones(2, 2))
    with pytest.raises(ValueError, match="shape"):
        dead_codes(torch.ones(0))
    with pytest.raises(ValueError, match="non-finite"):
        usage(torch.tensor([1.0, float("nan")]))


def test_usage_and_dead_codes_hand_fixture():
    counts = torch.tensor([1, 0, 2, 1, 0])
    assert usage(counts) == pytest.approx(0.6)
    assert dead_codes(counts) == 2
    assert isinstance(dead_codes(counts), int)


def test_usage_and_dead_codes_partition_the_codebook():
    gen = torch.Generator().manual_seed(3)
    counts = code_counts(torch.randint(0, 50, (60,), generator=gen), 64)
    assert usage(counts) * 64 + dead_codes(counts) == pytest.approx(64)
