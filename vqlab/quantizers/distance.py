"""Memory-bounded nearest-code search.

The usual VQ layer builds the dense ``N x K`` matrix of distances (and often an ``N x K``
one-hot). At ``N = 65,536`` tokens and ``K = 262,144`` codes that is 64 GiB of fp32. Here the
search walks the codebook in tiles and keeps a running ``(best distance, best index)`` per
row, so at most ``max_bytes`` of distances exist at any moment.

Memory bound: one tile of ``rows x cols`` fp32 distances with ``rows * cols * 4 <= max_bytes``
(plus the ``(N,)`` results and the ``(K,)`` code norms). The default budget is 64 MiB.

On the CPU the tile is smaller than the budget allows: at most ``CPU_TILE_BYTES`` (4 MiB) and
``CPU_TILE_COLS`` (512) codes wide, so that the tile the GEMM writes is still in cache when the
row minimum reads it. Measured on this project's 2-core EPYC CPU (torch 2.13, medians of 5;
N x D x K of 16,384 x 32 x 16,384, 8,192 x 256 x 16,384, 100,000 x 64 x 1,024,
4,096 x 32 x 65,536 and 65,536 x 8 x 16,384): 1.6-2.8x faster than 64 MiB tiles of whole
codebook rows, and 1.2-2.5x faster than the bare ``x @ c.T`` GEMM that writes the whole
matrix; at 4,096 x 512 x 4,096 all three are even. Other tiles of 2-8 MiB and 512-2,048 codes
came within the (large) noise of this shared machine. A GPU keeps the large tiles.

Glossary: ``N`` rows to search, ``K`` codes, ``D`` code dimension.
"""

from __future__ import annotations

import functools
import warnings
from typing import NamedTuple

import torch

from vqlab.validation import check_tensor, check_values

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


def _check(x: torch.Tensor, codebook: torch.Tensor) -> None:
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
    _check(x, codebook)
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


@functools.lru_cache(maxsize=1)
def triton_available() -> bool:
    """True when the fused Triton kernel imports (triton installed and importable)."""
    try:
        from vqlab.quantizers.ops import triton_nearest  # noqa: F401
    except ImportError:
        return False
    return True


BACKENDS = ("auto", "torch", "triton")
# Above this D, "auto" sends *exact* searches to the torch path even on CUDA. Measured on an H100
# (benchmarks/results/vq_nvidia-*.csv, N=65,536): the fused exact kernel (fp32 FMA, no tensor
# cores) beats chunked torch 2.0-2.3x at D=32 but loses 1.4-1.6x at D=256, where cuBLAS SGEMM
# outruns it and the distance-matrix traffic matters less. Fitting time = FLOPs / rate (+ the
# matrix traffic for torch) to those two points puts the crossover near D=165; D in between is
# not measured. Fast (bf16) searches always take the kernel.
AUTO_TRITON_EXACT_MAX_D = 128


# why "auto" stopped using the kernel in this process (a Triton compile or launch error), or None
_triton_failed: str | None = None


def auto_backend(device_type: str, dim: int, precision: str) -> str:
    """The backend ``backend="auto"`` picks for a search on ``device_type`` with D = ``dim``."""
    if device_type != "cuda" or not triton_available() or _triton_failed is not None:
        return "torch"
    if precision == "exact" and dim > AUTO_TRITON_EXACT_MAX_D:
        return "torch"
    return "triton"


def nearest_code(
    x: torch.Tensor,
    codebook: torch.Tensor,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    backend: str = "auto",
    precision: str = "exact",
) -> NearestCode:
    """Nearest code of every row of ``x`` by squared Euclidean distance.

    x: (N, D), codebook: (K, D), any float dtype. Returns :class:`NearestCode` with (N,) int64
    indices (lowest index on ties) and (N,) fp32 squared distances.

    backend:
      - ``"auto"``: the fused Triton kernel when ``x`` is on CUDA and triton imports, except
        exact searches with D > ``AUTO_TRITON_EXACT_MAX_D`` (128), where the torch path was
        faster on an H100; else torch (:func:`auto_backend`).
      - ``"torch"``: the chunked fp32 search, which never materialises more than ``max_bytes``
        of distances.
      - ``"triton"``: the fused kernel (:mod:`vqlab.quantizers.ops.triton_nearest`), which writes
        no distance matrix at all (``max_bytes`` is unused). Needs CUDA tensors, or
        ``TRITON_INTERPRET=1`` set before triton is first imported (CPU interpreter, slow).

    Checks (:mod:`vqlab.validation`): tensors, (N, D) and (K, D) shapes with K >= 1, one
    device, float dtypes, and finite values within the fp32 range of squared distances (one
    sync); N = 0 gives empty results.

    precision: ``"exact"`` (fp32 scoring, no tf32) or ``"fast"`` (Triton only: bf16 tensor-core
    scoring, then fp32 re-scoring of each row's best 8 candidates and a per-row certificate;
    rows it cannot certify, where codes crowd within bf16 rounding of each other, are searched
    again in fp32, so the answer is the exact one; see
    :mod:`vqlab.quantizers.ops.triton_nearest`). The torch backend always computes the exact
    answer, so ``"fast"`` there returns the exact result.
    """
    check_tensor(x, "x")
    check_tensor(codebook, "codebook")
    _check(x, codebook)
    # one sync: NaN, Inf or overflowing values would give silently wrong codes
    check_values({"x": x, "codebook": codebook}, dim=x.shape[1], what="nearest-code search")
    if backend not in BACKENDS:
        raise ValueError(f"unknown nearest_code backend {backend!r}; choose one of {BACKENDS}")
    if precision not in ("exact", "fast"):
        raise ValueError(f"unknown nearest_code precision {precision!r}; choose 'exact' or 'fast'")
    auto = backend == "auto"
    if auto:
        backend = auto_backend(x.device.type, x.shape[1], precision)
    if backend == "torch":
        return nearest_code_torch(x, codebook, max_bytes=max_bytes)
    if not triton_available():
        raise RuntimeError(
            "nearest_code(backend='triton') needs the triton package (pip install triton, on a "
            "machine with CUDA); use backend='torch' otherwise"
        )
    from vqlab.quantizers.ops.triton_nearest import nearest_code_triton

    try:
        return nearest_code_triton(x, codebook, precision=precision)
    except Exception as err:
        # "auto" promises an answer: if Triton itself cannot build or launch the kernel on
        # this machine (compiler, ptxas, shared memory), say so once and use torch from now
        # on. An explicit backend="triton" raises; so does any error that is not Triton's.
        if not auto or not type(err).__module__.startswith("triton"):
            raise
        _give_up_on_triton(err)
        return nearest_code_torch(x, codebook, max_bytes=max_bytes)


def _give_up_on_triton(err: Exception) -> None:
    global _triton_failed
    _triton_failed = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
    warnings.warn(
        f"the fused Triton nearest-code kernel failed ({_triton_failed}); backend='auto' uses "
        "the chunked torch search for the rest of this process. Please report this with your "
        "GPU, torch and triton versions.",
        RuntimeWarning,
        stacklevel=3,
    )
