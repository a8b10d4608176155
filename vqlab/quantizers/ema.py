"""The VQ-VAE exponential-moving-average ("statistical") codebook update.

Pure functions of tensors. Per step, with ``n_k`` the number of encoder outputs assigned to code
``k`` and ``s_k`` their sum:

    N_k <- decay * N_k + (1 - decay) * n_k
    S_k <- decay * S_k + (1 - decay) * s_k
    e_k  = S_k / N~_k,   N~_k = (N_k + eps) / (sum_j N_j + K * eps) * sum_j N_j

``N~`` is Laplace smoothing: it keeps a code that lost all its points from dividing by zero.
"""

from __future__ import annotations

from typing import NamedTuple

import torch


class EmaState(NamedTuple):
    """counts: (K,) EMA cluster sizes; sums: (K, D) EMA sums; codebook: (K, D) = sums / smoothed."""

    counts: torch.Tensor
    sums: torch.Tensor
    codebook: torch.Tensor


def batch_statistics(
    z: torch.Tensor, indices: torch.Tensor, codebook_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-code counts and sums of one batch, without an ``N x K`` one-hot.

    z: (N, D) float; indices: (N,) int64 in [0, K). Returns counts (K,) and sums (K, D), in the
    dtype of ``z``.
    """
    if z.dim() != 2 or indices.shape != z.shape[:1]:
        raise ValueError(
            f"batch_statistics expects z (N, D) and indices (N,); got {tuple(z.shape)} and "
            f"{tuple(indices.shape)}"
        )
    counts = torch.bincount(indices, minlength=codebook_size).to(z.dtype)  # (K,)
    sums = torch.zeros(codebook_size, z.shape[1], dtype=z.dtype, device=z.device)
    sums.index_add_(0, indices, z)  # (K, D)
    return counts, sums


def laplace_smooth(counts: torch.Tensor, eps: float) -> torch.Tensor:
    """(K,) counts -> (K,) smoothed counts with the same total and none at zero."""
    total = counts.sum()
    k = counts.shape[0]
    return (counts + eps) / (total + k * eps) * total


def ema_update(
    counts: torch.Tensor,
    sums: torch.Tensor,
    batch_counts: torch.Tensor,
    batch_sums: torch.Tensor,
    *,
    decay: float,
    eps: float,
) -> EmaState:
    """One EMA step. counts (K,), sums (K, D), batch_counts (K,), batch_sums (K, D)."""
    if not 0.0 < decay < 1.0:
        raise ValueError(f"decay must lie in (0, 1); got {decay}")
    new_counts = counts * decay + batch_counts * (1.0 - decay)
    new_sums = sums * decay + batch_sums * (1.0 - decay)
    codebook = new_sums / laplace_smooth(new_counts, eps).unsqueeze(1)
    return EmaState(new_counts, new_sums, codebook)
