"""One-pass preparation of the rows the fused nearest-code kernel reads.

The exact path needs only the codebook's fp32 squared norms. The fast path scores in bf16 on
the tensor cores, so it also needs contiguous low-precision copies: ``x - mu`` split into
``hi + lo`` halves, and ``codebook - mu`` rounded once and stored in the interleaved order of
:func:`interleave`. Each is made by one pass of :func:`_prep_rows_kernel`.
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl


def interpreting() -> bool:
    """True when Triton runs kernels in its CPU interpreter (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0").lower() in ("1", "true", "yes", "on")


@triton.jit
def _prep_rows_kernel(
    src_ptr,
    mu_ptr,
    hi_ptr,
    lo_ptr,
    sq_ptr,
    R,
    R_src,
    G,
    S,
    stride_n,
    stride_d,
    D: tl.constexpr,
    ROUND: tl.constexpr,
    WRITE_LO: tl.constexpr,
    WRITE_SQ: tl.constexpr,
    BLOCK_R: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    """One pass writing R output rows; output row p reads source row ``(p % G) * S + p // G``
    of the (R_src, D) rows ``v`` (``G = R, S = 1``: row p itself). Rows past R_src are padding.

    ROUND: write ``hi = low(v - mu)`` (contiguous), and with WRITE_LO ``lo = low(v - mu - hi)``.
    WRITE_SQ: (R,) fp32 squared norms, of ``hi`` when ROUND (the codes the fast path scores
    against), else of ``v``; ``inf`` for padding, so the search never picks it.
    """
    rows = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    ok = rows < R
    src_rows = (rows % G) * S + rows // G
    valid = ok & (src_rows < R_src)
    acc = tl.zeros((BLOCK_R,), tl.float32)
    for d0 in range(0, D, BLOCK_D):
        dd = d0 + tl.arange(0, BLOCK_D)
        m = valid[:, None] & (dd[None, :] < D)
        src = src_ptr + src_rows.to(tl.int64)[:, None] * stride_n + dd[None, :] * stride_d
        v = tl.load(src, mask=m, other=0.0).to(tl.float32)
        if ROUND:
            mu = tl.load(mu_ptr + dd, mask=dd < D, other=0.0)
            v = tl.where(m, v - mu[None, :], 0.0)
            hi = v.to(hi_ptr.dtype.element_ty)
            out = rows.to(tl.int64)[:, None] * D + dd[None, :]
            m_out = ok[:, None] & (dd[None, :] < D)
            tl.store(hi_ptr + out, hi, mask=m_out)
            if WRITE_LO:
                lo = (v - hi.to(tl.float32)).to(lo_ptr.dtype.element_ty)
                tl.store(lo_ptr + out, lo, mask=m_out)
            v = hi.to(tl.float32)
        if WRITE_SQ:
            acc += tl.sum(v * v, axis=1)
    if WRITE_SQ:
        tl.store(sq_ptr + rows, tl.where(valid, acc, float("inf")), mask=ok)


def lp_dtype() -> torch.dtype:
    # the interpreter's tl.dot multiplies bf16 bit patterns as integers (seen with triton 3.9);
    # fp16 it does right, and the logic under test is the same
    return torch.float16 if interpreting() else torch.bfloat16


def interleave(k: int) -> tuple[int, int]:
    """(G, S): the fast path's codebook copy holds ``G * S >= K`` rows, row p being code
    ``(p % G) * S + p // G``, so any run of copy rows (a tile) holds codes S apart.

    Why: the kernel keeps only 2 candidates per tile, and codebooks often hold runs of
    neighbouring near-identical codes (clusters laid out in order); spread over tiles, each
    of them can reach the running list of 8. About 128 codes per group, one widest tile.
    """
    s = max(1, triton.cdiv(k, 128))
    return triton.cdiv(k, s), s


def prep_rows(
    v: torch.Tensor,
    mu: torch.Tensor | None,
    *,
    lo: bool,
    sq: bool,
    interleave: tuple[int, int] | None = None,
) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
    """(hi, lo, sq) of (R, D) rows ``v``: see :func:`_prep_rows_kernel`; None where not asked.

    interleave: (G, S) to write ``G * S`` rows in the order of :func:`interleave`.
    """
    r_src, d = v.shape
    g, s = interleave or (r_src, 1)
    r = g * s
    hi_t = lo_t = sq_t = None
    if mu is not None:
        hi_t = torch.empty((r, d), dtype=lp_dtype(), device=v.device)
        lo_t = torch.empty_like(hi_t) if lo else None
    if sq:
        sq_t = torch.empty(r, dtype=torch.float32, device=v.device)
    dummy = v  # pointers the kernel never touches (its flags skip them)
    _prep_rows_kernel[(triton.cdiv(r, 64),)](
        v,
        mu if mu is not None else dummy,
        hi_t if hi_t is not None else dummy,
        lo_t if lo_t is not None else dummy,
        sq_t if sq_t is not None else dummy,
        r,
        r_src,
        g,
        s,
        v.stride(0),
        v.stride(1),
        D=d,
        ROUND=mu is not None,
        WRITE_LO=lo,
        WRITE_SQ=sq,
        BLOCK_R=64,
        BLOCK_D=min(64, triton.next_power_of_2(d)),
    )
    return hi_t, lo_t, sq_t
