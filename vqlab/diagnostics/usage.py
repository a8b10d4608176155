"""Codebook usage: counts, perplexity, usage fraction and dead codes.

Definitions (as in the paper's "Metrics" section):

- ``perplexity = exp(-sum_k p_k log p_k)`` with ``p_k`` the share of encoded positions assigned
  to code ``k`` over the evaluation set; codes with ``p_k = 0`` contribute nothing. It is 1 when
  one code takes every position and ``K`` when all ``K`` codes are used equally.
- ``usage``: the fraction of the ``K`` codes used at least once.
- ``dead_codes``: the number of codes never used.

All functions take the ``(K,)`` count vector from :func:`code_counts`, so a caller can sum
counts over many batches and compute the metrics once.
"""

from __future__ import annotations

import math

import torch

from vqlab.validation import check_integer, check_tensor


def _check_counts(counts: torch.Tensor, fn: str) -> torch.Tensor:
    """Return ``counts`` as a detached float64 (K,) tensor after checking it."""
    check_tensor(counts, f"{fn}'s counts")
    if counts.dtype == torch.bool or counts.is_complex():
        raise TypeError(f"{fn} expects integer or float counts; got dtype {counts.dtype}")
    if counts.dim() != 1 or counts.numel() == 0:
        raise ValueError(
            f"{fn} expects counts of shape (K,) with K >= 1; got {tuple(counts.shape)}"
        )
    c = counts.detach().to(torch.float64)
    if not bool(torch.isfinite(c).all()):
        raise ValueError(f"{fn} got non-finite counts")
    if bool((c < 0).any()):
        raise ValueError(f"{fn} got negative counts (min {c.min().item()})")
    return c


def code_counts(indices: torch.Tensor, codebook_size: int) -> torch.Tensor:
    """How many positions were assigned to each code.

    indices: any shape, integer dtype, values in ``[0, codebook_size)``.
    Returns (K,) int64 counts on the device of ``indices``; an empty ``indices`` gives zeros.
    """
    check_integer(indices, "indices")
    if isinstance(codebook_size, bool) or not isinstance(codebook_size, int):
        raise TypeError(f"codebook_size must be an int; got {type(codebook_size).__name__}")
    if codebook_size < 1:
        raise ValueError(f"codebook_size must be >= 1; got {codebook_size}")
    flat = indices.detach().reshape(-1).long()  # (N,)
    if flat.numel() > 0:
        lo, hi = int(flat.min()), int(flat.max())
        if lo < 0 or hi >= codebook_size:
            raise ValueError(
                f"indices must lie in [0, {codebook_size}); got values in [{lo}, {hi}]"
            )
    return torch.bincount(flat, minlength=codebook_size)


def perplexity(counts: torch.Tensor) -> float:
    """exp of the entropy (nats) of the code-usage distribution.

    counts: (K,) non-negative counts (int or float), not all zero.
    Returns a float in ``[1, K]``.
    """
    c = _check_counts(counts, "perplexity")
    total = c.sum()
    if total.item() == 0:
        raise ValueError("perplexity is undefined for all-zero counts (no positions encoded)")
    p = c[c > 0] / total
    entropy = -(p * p.log()).sum().item()
    return math.exp(entropy)


def usage(counts: torch.Tensor) -> float:
    """Fraction of codes used at least once.

    counts: (K,) non-negative counts. Returns a float in ``[0, 1]``.
    """
    c = _check_counts(counts, "usage")
    return (c > 0).sum().item() / c.numel()


def dead_codes(counts: torch.Tensor) -> int:
    """Number of codes never used.

    counts: (K,) non-negative counts. Returns an int in ``[0, K]``.
    """
    c = _check_counts(counts, "dead_codes")
    return int((c == 0).sum().item())
