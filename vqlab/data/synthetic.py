"""The papers' synthetic data: a mixture of equal-variance Gaussians with different means."""

from __future__ import annotations

from typing import NamedTuple

import torch


class Mixture(NamedTuple):
    """x: (N, dim) float32; labels: (N,) int64 peak of each point; means: (peaks, dim)."""

    x: torch.Tensor
    labels: torch.Tensor
    means: torch.Tensor


def mixture_means(peaks: int, dim: int, spread: float, seed: int) -> torch.Tensor:
    """(peaks, dim) means drawn uniformly from [-spread, spread]^dim."""
    gen = torch.Generator().manual_seed(seed)
    return (torch.rand(peaks, dim, generator=gen) * 2 - 1) * spread


def sample_mixture(means: torch.Tensor, std: float, samples_per_peak: int, seed: int) -> Mixture:
    """``samples_per_peak`` points from each peak N(mean, std^2 I), grouped by peak."""
    if std <= 0 or samples_per_peak < 1:
        raise ValueError(f"need std > 0 and samples_per_peak >= 1; got {std}, {samples_per_peak}")
    gen = torch.Generator().manual_seed(seed)
    peaks, dim = means.shape
    labels = torch.arange(peaks).repeat_interleave(samples_per_peak)  # (N,)
    noise = torch.randn(peaks * samples_per_peak, dim, generator=gen) * std
    return Mixture(means[labels] + noise, labels, means)


def gaussian_mixture(
    peaks: int = 10,
    dim: int = 8,
    std: float = 0.5,
    samples_per_peak: int = 1000,
    spread: float = 10.0,
    seed: int = 0,
    test_samples_per_peak: int = 200,
) -> tuple[Mixture, Mixture]:
    """Train and test sets drawn from the same mixture (same means, independent noise)."""
    if peaks < 1 or dim < 1:
        raise ValueError(f"need peaks >= 1 and dim >= 1; got {peaks}, {dim}")
    means = mixture_means(peaks, dim, spread, seed)
    train = sample_mixture(means, std, samples_per_peak, seed + 1)
    test = sample_mixture(means, std, test_samples_per_peak, seed + 2)
    return train, test
