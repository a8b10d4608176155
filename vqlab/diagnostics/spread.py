"""Spread of a set of vectors: exact mean pairwise distances, and distance to the nearest code.

``mean_pairwise_l2`` is exact over all ``N (N - 1) / 2`` unordered pairs, yet never holds the
``N x N`` distance matrix: at ``N = 262,144`` codes that matrix would be 512 GiB in float64.
It walks the upper triangle in row blocks, each block a tile of float64 distances of at most
``chunk_bytes``, and adds each tile's sum into a float64 accumulator.

``mean_pairwise_cos_dist`` needs no tiles at all: the sum of cosines over pairs has a closed
form in the sum of the unit vectors (see its docstring), so it is exact in O(N D).

Glossary: ``N`` rows, ``D`` dimension, ``K`` codes.
"""

from __future__ import annotations

import torch

from vqlab.quantizers.distance import DEFAULT_MAX_BYTES, nearest_code
from vqlab.validation import check_matrix, check_values

DEFAULT_CHUNK_BYTES = 64 * 2**20


def _check_matrix(
    x: torch.Tensor, name: str, min_rows: int, *, compute: torch.dtype = torch.float64
) -> None:
    """A floating-point (N, D) tensor of real data with N >= min_rows, D >= 1, and finite
    values whose squared distances fit in ``compute`` (see :mod:`vqlab.validation`)."""
    check_matrix(x, name, min_rows=min_rows)
    check_values({name: x}, compute=compute)


def _block_rows(cols: int, chunk_bytes: int) -> int:
    """Rows of a float64 tile with ``cols`` columns that fits in ``chunk_bytes`` (at least 1)."""
    return max(1, chunk_bytes // (8 * cols))


@torch.no_grad()
def mean_pairwise_l2(x: torch.Tensor, *, chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> float:
    """Exact mean Euclidean distance over all unordered pairs ``i < j`` of rows of ``x``.

    x: (N, D) floating point, N >= 2. Computed in float64 on ``x``'s device.
    chunk_bytes: budget for one tile of float64 distances; a tile always holds at least one
    row, so the true peak is ``max(chunk_bytes, 8 N)`` bytes plus O(N D) for the float64 copy.
    On CPU a budget of a few MiB is often faster than the default, as the tile stays in cache.
    """
    _check_matrix(x, "x", min_rows=2)
    if isinstance(chunk_bytes, bool) or not isinstance(chunk_bytes, int):
        raise TypeError(f"chunk_bytes must be an int; got {type(chunk_bytes).__name__}")
    if chunk_bytes < 8:
        raise ValueError(f"chunk_bytes must be at least 8 (one float64); got {chunk_bytes}")
    n = x.shape[0]
    # Centering leaves distances unchanged but shrinks the norms, which cuts the cancellation
    # in ||a||^2 + ||b||^2 - 2 a.b when the cloud sits far from the origin.
    x64 = x.detach().to(torch.float64)
    x64 = x64 - x64.mean(dim=0)
    sq = (x64 * x64).sum(dim=1)  # (N,)
    total = torch.zeros((), dtype=torch.float64, device=x.device)
    r0 = 0
    while r0 < n - 1:
        # Block [r0, r1) only meets columns j >= r0: pairs with j < r0 were counted earlier.
        # Columns shrink as r0 grows, so later blocks take more rows under the same budget.
        r1 = min(n, r0 + _block_rows(n - r0, chunk_bytes))
        b = r1 - r0
        d = torch.addmm(sq[r0:], x64[r0:r1], x64[r0:].T, alpha=-2.0)  # (b, N - r0)
        d.add_(sq[r0:r1, None]).clamp_min_(0.0).sqrt_()
        # The first b columns are the block against itself: keep the strict upper triangle
        # (in place, so no second tile is allocated).
        d[:, :b].triu_(diagonal=1)
        total += d.sum()
        r0 = r1
    pairs = n * (n - 1) / 2
    return total.item() / pairs


@torch.no_grad()
def mean_pairwise_cos_dist(x: torch.Tensor) -> float:
    """Exact mean cosine distance ``1 - cos(x_i, x_j)`` over all unordered pairs ``i < j``.

    x: (N, D) floating point, N >= 2. Returns a float in ``[0, 2]``.

    Zero rows have no direction; they are given cosine 0 with every row (distance 1), which is
    what a zero unit vector ``u_i = 0`` gives in the identity used here:
    ``sum_{i<j} u_i . u_j = (||sum_i u_i||^2 - sum_i ||u_i||^2) / 2``.
    """
    _check_matrix(x, "x", min_rows=2)
    n = x.shape[0]
    x64 = x.detach().to(torch.float64)
    norms = x64.norm(dim=1)  # (N,)
    nonzero = norms > 0
    u = torch.where(nonzero[:, None], x64 / norms.clamp_min(1e-300)[:, None], 0.0)  # (N, D)
    s = u.sum(dim=0)  # (D,)
    cos_sum = ((s * s).sum() - nonzero.sum()) / 2
    pairs = n * (n - 1) / 2
    # clamp: rounding in the closed form can step just outside [0, 2] (-4e-16 for equal rows)
    return min(2.0, max(0.0, 1.0 - cos_sum.item() / pairs))


@torch.no_grad()
def mean_nearest_distance(
    x: torch.Tensor, codebook: torch.Tensor, *, max_bytes: int = DEFAULT_MAX_BYTES
) -> float:
    """Mean Euclidean (not squared) distance from each row of ``x`` to its nearest code.

    x: (N, D), codebook: (K, D), both floating point on the same device, N >= 1.
    The search is :func:`vqlab.quantizers.distance.nearest_code` (fp32, memory-bounded by
    ``max_bytes``); the mean is taken in float64.
    """
    _check_matrix(x, "x", min_rows=1, compute=torch.float32)  # the search runs in fp32
    _check_matrix(codebook, "codebook", min_rows=1, compute=torch.float32)
    if x.shape[1] != codebook.shape[1]:
        raise ValueError(f"x has D={x.shape[1]} but the codebook has D={codebook.shape[1]}")
    sq = nearest_code(x.detach(), codebook.detach(), max_bytes=max_bytes).distances  # (N,)
    return sq.to(torch.float64).sqrt().mean().item()
