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
``benchmarks/results/cpu_tiles_epyc-2core_torch2.13.0.md`` (2 MiB was tried and measured
level with 4 MiB within this machine's noise: 0.67x to 1.40x across shapes).

The CPU loop also differs in how it scores and reduces a tile (issue 23's profile,
``benchmarks/results/search_profile_command.txt``): ``addmm`` with the code norms as a
broadcast bias cost several times a plain GEMM of the same shape at small D, and ``min(dim=1)``
(values and indices) about 8x ``amin``. So the CPU tile is one plain GEMM of augmented operands
(:func:`augmented_operands`: ``[x, 1] @ [-2c, ||c||^2].T``) up to ``AUGMENT_MAX_D`` (above it
the odd width D + 1 slowed the GEMM more than the bias did). The first tile of a row block
takes every row's minimum and index from :func:`row_min` (``amin`` over chunks of 64 columns,
then ``argmin`` over the chunk minima and inside the winning chunk); later tiles take ``amin``
alone and look indices up only for the rows they improve. Up to 1,024 codes go in one tile
(:func:`cpu_tile_shape`).

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
# the CPU search scores D <= this with augmented operands, larger D with a bias (addmm)
AUGMENT_MAX_D = 64
# columns per chunk of the two-level row minimum (row_min); 16 fell off amin's fast path
ARGMIN_CHUNK = 64


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


def cpu_tile_shape(n: int, k: int, max_bytes: int = DEFAULT_MAX_BYTES) -> tuple[int, int]:
    """The CPU search's tile: at most ``CPU_TILE_BYTES`` and ``max_bytes``, ``CPU_TILE_COLS``
    codes wide, except that up to twice that many codes go in one tile (one reduction and no
    running-best update per row block, for the small codebooks k-means often fits)."""
    wide = k if k <= 2 * CPU_TILE_COLS else CPU_TILE_COLS
    return tile_shape(n, k, min(max_bytes, CPU_TILE_BYTES), wide)


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
        rows, cols = cpu_tile_shape(n, k, max_bytes)
        _cpu_tiles(x32, c32, best_d, best_i, rows, cols)
        return _finish(x32, best_d, best_i)
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
    return _finish(x32, best_d, best_i)


def _finish(x32: torch.Tensor, best_d: torch.Tensor, best_i: torch.Tensor) -> NearestCode:
    """Add the ``||x||^2`` term to the (N,) best partial distances."""
    x_sq = (x32 * x32).sum(1)
    # clamp: cancellation can push tiny distances below zero
    return NearestCode(best_i, (best_d + x_sq).clamp_min_(0.0))


def augmented_operands(x32: torch.Tensor, c32: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """x (N, D), c (K, D) fp32 -> ``[x, 1]`` (N, D + 1) and ``[-2 c, ||c||^2]`` (K, D + 1).

    Their product is ``||c||^2 - 2 x.c``, the search's partial distance, in one plain GEMM with
    no bias to broadcast (``-2 c`` is exact: a power of two).
    """
    ones = torch.ones(x32.shape[0], 1, dtype=x32.dtype, device=x32.device)
    c_sq = (c32 * c32).sum(1, keepdim=True)
    return torch.cat([x32, ones], 1), torch.cat([-2.0 * c32, c_sq], 1)


def _cpu_tiles(
    x32: torch.Tensor,
    c32: torch.Tensor,
    best_d: torch.Tensor,
    best_i: torch.Tensor,
    rows: int,
    cols: int,
) -> None:
    """The CPU tile loop (module docstring): fills best_d, best_i (N,) in place.

    x32: (N, D), c32: (K, D) fp32. Ties: ``argmin`` returns a row's first minimum, and a later
    tile replaces the best only when strictly lower, so the lowest index wins.
    """
    if x32.shape[1] <= AUGMENT_MAX_D:
        xa, ca = augmented_operands(x32, c32)
        bias = None
    else:  # D + 1 columns cost more than the broadcast bias here
        xa, ca, bias = x32, -2.0 * c32, (c32 * c32).sum(1)
    n, k = xa.shape[0], ca.shape[0]
    tile = torch.empty(min(rows, n) * min(cols, k))
    for r0 in range(0, n, rows):
        xr = xa[r0 : r0 + rows]  # (r, D + 1) or (r, D)
        bd, bi = best_d[r0 : r0 + rows], best_i[r0 : r0 + rows]
        for c0 in range(0, k, cols):
            cc = ca[c0 : c0 + cols]
            out = tile[: xr.shape[0] * cc.shape[0]].view(xr.shape[0], cc.shape[0])
            if bias is None:
                d = torch.mm(xr, cc.T, out=out)  # (r, c)
            else:
                d = torch.addmm(bias[c0 : c0 + cols], xr, cc.T, out=out)
            if c0 == 0:  # every row improves on +inf
                dmin, imin = row_min(d)
                bd.copy_(dmin)
                bi.copy_(imin)
                continue
            # later tiles improve ever fewer rows (about r / t in tile t on random data): the
            # cheap amin decides which, and only those rows pay for their index
            dmin = d.amin(1)
            better = dmin < bd
            hit = better.nonzero().squeeze(1)
            if hit.numel():
                bi[hit] = row_min(d[hit])[1] + c0
            torch.where(better, dmin, bd, out=bd)


def row_min(d: torch.Tensor, chunk: int = ARGMIN_CHUNK) -> tuple[torch.Tensor, torch.Tensor]:
    """d (r, c) contiguous -> each row's minimum (r,) and the index of its first occurrence (r,)
    int64: what ``d.min(dim=1)`` gives, in two levels.

    ``amin`` over chunks of ``chunk`` columns (a vectorised pass), ``argmin`` over the r x c /
    chunk chunk minima, then ``argmin`` inside the winning chunk of each row: about 7x faster
    than ``min(dim=1)`` on this project's CPU. The first chunk holding the minimum and the first
    position in it give the first occurrence overall, as ``argmin`` does. Widths that are not a
    multiple of ``chunk`` (or under two chunks) take plain ``argmin``.
    """
    r, c = d.shape
    if c % chunk or c < 2 * chunk:
        idx = d.argmin(1)
        return d.gather(1, idx[:, None]).squeeze(1), idx
    per_row = c // chunk
    mins = d.view(r, per_row, chunk).amin(2)  # (r, c / chunk)
    j = mins.argmin(1)  # (r,) the first chunk holding the row's minimum
    # the winning chunks as rows of the (r * c / chunk, chunk) view: index_select copies them
    # several times faster than a gather with an expanded index
    rows = torch.arange(r, device=d.device) * per_row + j
    inside = d.view(-1, chunk).index_select(0, rows)  # (r, chunk)
    return mins.view(-1).index_select(0, rows), j * chunk + inside.argmin(1)
