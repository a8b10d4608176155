"""Nearest-code search: the dispatcher between the chunked torch search and the Triton kernel.

:func:`nearest_code` checks its input, picks a backend (:func:`auto_backend`) and calls
either :func:`vqlab.quantizers.nearest_torch.nearest_code_torch` (exact fp32, memory-bounded
tiles) or the fused kernel :func:`vqlab.quantizers.ops.triton_nearest.nearest_code_triton`,
to which it passes the exact search that the kernel's fast mode falls back on. The names of
the torch search (``NearestCode``, ``nearest_code_torch``, ``tile_shape``, the tile budgets)
are re-exported here, where callers have always found them.

Glossary: ``N`` rows to search, ``K`` codes, ``D`` code dimension.
"""

from __future__ import annotations

import functools
import warnings

import torch

from vqlab.quantizers.nearest_torch import (
    CPU_TILE_BYTES,
    CPU_TILE_COLS,
    DEFAULT_MAX_BYTES,
    NearestCode,
    check_search_inputs,
    nearest_code_torch,
    tile_shape,
)
from vqlab.validation import check_tensor, check_values

__all__ = [
    "AUTO_TRITON_EXACT_MAX_D",
    "BACKENDS",
    "CPU_TILE_BYTES",
    "CPU_TILE_COLS",
    "DEFAULT_MAX_BYTES",
    "NearestCode",
    "auto_backend",
    "nearest_code",
    "nearest_code_torch",
    "tile_shape",
    "triton_available",
]


@functools.lru_cache(maxsize=1)
def triton_available() -> bool:
    """True when the fused Triton kernel imports (triton installed and importable)."""
    try:
        from vqlab.quantizers.ops import triton_nearest  # noqa: F401
    except ImportError:
        return False
    return True


BACKENDS = ("auto", "torch", "triton")
# Above this D, "auto" sends *exact* searches to the torch path even on CUDA, where cuBLAS SGEMM
# outran the fused fp32 kernel; the measurements and the fitted crossover are in
# benchmarks/results/notes_nvidia-h100-80gb-hbm3_torch2.11.0-cu130.md. Fast (bf16) searches
# always take the kernel.
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
    check_search_inputs(x, codebook)
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
        return nearest_code_triton(x, codebook, precision=precision, exact=_exact_search)
    except Exception as err:
        # "auto" promises an answer: if Triton itself cannot build or launch the kernel on
        # this machine (compiler, ptxas, shared memory), say so once and use torch from now
        # on. An explicit backend="triton" raises; so does any error that is not Triton's.
        if not auto or not type(err).__module__.startswith("triton"):
            raise
        _give_up_on_triton(err)
        return nearest_code_torch(x, codebook, max_bytes=max_bytes)


def _exact_search(x: torch.Tensor, codebook: torch.Tensor) -> NearestCode:
    """The exact fp32 search the kernel's fast mode falls back on, by the backend auto picks.

    x: (N, D), codebook: (K, D), already checked.
    """
    if auto_backend(x.device.type, x.shape[1], "exact") == "triton":
        from vqlab.quantizers.ops.triton_nearest import nearest_code_triton

        return nearest_code_triton(x, codebook, precision="exact")
    return nearest_code_torch(x, codebook)


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
