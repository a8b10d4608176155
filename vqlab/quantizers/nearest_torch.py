"""The chunked torch nearest-code search: exact fp32, at most ``max_bytes`` of distances.

The usual VQ layer builds the dense ``N x K`` matrix of distances (and often an ``N x K``
one-hot). At ``N = 65,536`` tokens and ``K = 262,144`` codes that is 64 GiB of fp32. Here the
search walks the codebook in tiles and keeps a running ``(best distance, best index)`` per
row, so at most ``max_bytes`` of distances exist at any moment.

Memory bound: one tile of ``rows x cols`` fp32 distances with ``rows * cols * 4 <= max_bytes``
(plus the ``(N,)`` results and the ``(K,)`` code norms). The default budget is 64 MiB.

On the CPU the tile is smaller than the budget allows: at most ``CPU_TILE_BYTES`` (4 MiB) and
``CPU_TILE_COLS`` (512) codes wide, so that the tile the GEMM writes is still in cache when the
row minimum reads it; a GPU keeps the large tiles. The measurements behind those sizes are in
``benchmarks/results/cpu_tiles_epyc-2core_torch2.13.0.md``.

A leaf module (torch only): the dispatcher :func:`vqlab.quantizers.distance.nearest_code` and
the fused kernel :mod:`vqlab.quantizers.ops.triton_nearest` both build on it.

Glossary: ``N`` rows to search, ``K`` codes, ``D`` code dimension.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

DEFAULT_MAX_BYTES = 64 * 2**20
CPU_TILE_BYTES = 4 * 2**20
CPU_TILE_COLS = 512


class NearestCode(NamedTuple):
    """Result of :func:`nearest_code`.

    indices: (N,) int64, index of the nearest code (lowest index on ties).
    distances: (N,) float32, squared Euclidean distance to that code.
    """

    indices: torch.Tensor
    distances: torch.Tensor


def check_search_inputs(x: torch.Tensor, codebook: torch.Tensor) -> None:
    """Shapes (N, D) and (K, D) with K >= 1, float dtypes, one device; else a clear error."""
    if x.dim() != 2 or codebook.dim() != 2:
        raise ValueError(
            f"nearest_code expects x of shape (N, D) and codebook (K, D); got {tuple(x.shape)} "
            f"and {tuple(codebook.shape)}"
        )
    if x.shape[1] != codebook.shape[1]:
        raise ValueError(
            f"dimension mismatch: x has D={x.shape[1]} but the codebook has D={codebook.shape[1]}"
        )
    if codebook.shape[0] == 0:
        raise ValueError("the codebook is empty (K=0)")
    if not (x.is_floating_point() and codebook.is_floating_point()):
        raise TypeError(
            f"nearest_code needs floating-point tensors; got {x.dtype} and {codebook.dtype}"
        )
    if x.device != codebook.device:
        raise ValueError(f"x is on {x.device} but the codebook is on {codebook.device}")


def tile_shape(
    n: int, k: int, max_bytes: int = DEFAULT_MAX_BYTES, max_cols: int | None = None
) -> tuple[int, int]:
    """Rows and columns of one fp32 distance tile that fits in ``max_bytes``.

    Prefers whole rows of the codebook (``cols = K``, or ``max_cols`` if smaller) and shrinks
    the codebook tile only when one such row of distances would not fit in the budget. The
    tile always has >= 1 row and >= 1 column.
    """
    if max_bytes < 4:
        raise ValueError(f"max_bytes must be at least 4 (one fp32 distance); got {max_bytes}")
    if max_cols is not None and max_cols < 1:
        raise ValueError(f"max_cols must be at least 1; got {max_cols}")
    budget = max_bytes // 4  # fp32 elements
    cols = min(k, budget, max_cols or k)
    rows = max(1, min(n, budget // max(cols, 1)))
    return rows, cols


@torch.no_grad()
def nearest_code_torch(
    x: torch.Tensor, codebook: torch.Tensor, *, max_bytes: int = DEFAULT_MAX_BYTES
) -> NearestCode:
    """Chunked torch search: exact fp32 squared L2 argmin.

    x: (N, D), codebook: (K, D). Any float dtype; scoring is done in fp32. At most
    ``max_bytes`` of distances exist at once; on the CPU the tile is cache-sized (module
    docstring): that changes the speed, not the answer (the same fp32 argmin, near-ties
    within fp32 rounding aside).
    ``||x - c||^2 = ||x||^2 - 2 x.c + ||c||^2``; the ``||x||^2`` term does not change the argmin,
    so it is added once per row at the end.
    """
    check_search_inputs(x, codebook)
    n, k = x.shape[0], codebook.shape[0]
    x32 = x.float()
    c32 = codebook.float()
    c_sq = (c32 * c32).sum(1)  # (K,)
    best_d = torch.full((n,), float("inf"), device=x.device)
    best_i = torch.zeros(n, dtype=torch.long, device=x.device)
    if x.device.type == "cpu":
        rows, cols = tile_shape(n, k, min(max_bytes, CPU_TILE_BYTES), CPU_TILE_COLS)
    else:
        rows, cols = tile_shape(n, k, max_bytes)
    for r0 in range(0, n, rows):
        xr = x32[r0 : r0 + rows]  # (r, D)
        bd = best_d[r0 : r0 + rows]
        bi = best_i[r0 : r0 + rows]
        for c0 in range(0, k, cols):
            # (r, c) partial distances without the ||x||^2 term
            d = torch.addmm(c_sq[c0 : c0 + cols], xr, c32[c0 : c0 + cols].T, alpha=-2.0)
            dmin, imin = d.min(dim=1)
            # strict < keeps the lowest index on ties across tiles
            better = dmin < bd
            bd = torch.where(better, dmin, bd)
            bi = torch.where(better, imin + c0, bi)
        best_d[r0 : r0 + rows] = bd
        best_i[r0 : r0 + rows] = bi
    x_sq = (x32 * x32).sum(1)
    # clamp: cancellation can push tiny distances below zero
    return NearestCode(best_i, (best_d + x_sq).clamp_min_(0.0))
