"""Fused nearest-code search in Triton: the distance GEMM and a running argmin in one kernel.

Each program owns ``BLOCK_N`` rows of ``x`` and walks the codebook in tiles of ``BLOCK_K``
codes. A tile's scores ``||c||^2 - 2 x.c`` live only in registers: they are reduced to a
per-row minimum before the next tile is loaded, so the ``N x K`` distance matrix is never
written. Memory use is the inputs, the ``(K,)`` code norms and the ``(N,)`` results.

Two precisions:

- ``"exact"``: fp32 operands and an IEEE fp32 dot (no tf32), the same arithmetic as
  :func:`vqlab.quantizers.nearest_torch.nearest_code_torch`. Ties go to the lowest index; rows whose
  two best codes differ by a rounding error may pick either (so does any other fp32 order).
- ``"fast"``: tensor-core scoring against a bf16 copy ``c~`` of the centred codebook
  (``c - mu``, ``mu`` the codebook mean), with ``x - mu`` split into two bf16 terms
  (``hi + lo``, two MMAs) so that ``x`` itself is not rounded. The score is then the exact
  distance to the rounded code, ``||x - c~||^2``, which differs from ``||x - c||^2`` by about
  ``2 |x - c| |c - mu| 2^-9``: the error shrinks with the distance itself, where plain bf16
  scoring errs by ``2^-8 |x| |c|`` whatever the distance (and swaps crowded near neighbours).
  The kernel keeps the best 2 candidates of every tile in a running list of 8 per row and at
  the end re-scores those 8 as ``||x - c||^2`` in fp32 (no cancellation), returning the best.
  The copy is stored interleaved (tile rows are codes ``K / 128`` apart), so a run of
  near-identical neighbouring codes spreads over many tiles instead of losing all but 2 in
  one.

  Certified: the kernel also keeps, per row, the lowest score of any code it did not
  re-score (each tile's third-best score, and every score that fell out of the list). From
  worst-case bounds on the bf16 and fp32 rounding, :func:`_certify` proves for each row that
  no such code can be as near as the re-scored winner; rows it cannot prove (codes crowded
  within rounding error of one another, exact ties) are searched again in exact fp32. The
  fast answer is therefore the exact one, up to fp32 rounding, on every input; what the data
  changes is only how many rows take the exact search (``stats["fallback_rows"]``). How many
  that is on trained codebooks, synthetic latents and crowded codes is measured by a CPU model
  of the arithmetic, ``benchmarks/model_fast_search.py``, whose results are in
  ``benchmarks/results/fast_search_model_cpu.txt``. The bounds are worst cases, so crowded
  data pays the exact search even where the list alone was right. The certificate is plain
  torch, in :mod:`vqlab.quantizers.ops.certify`; the launch configurations and their pruning
  are in :mod:`vqlab.quantizers.ops.triton_tuning`.

Small ``N`` (a few row blocks) would leave most of the GPU idle, so the codebook is then split
into ``splits`` ranges run by separate programs; their ``(splits, N)`` partial winners are
merged in torch by (distance, index).

Glossary: ``N`` rows, ``K`` codes, ``D`` code dimension.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
import triton
import triton.language as tl

from vqlab.quantizers.nearest_torch import NearestCode, check_search_inputs, nearest_code_torch
from vqlab.quantizers.ops.certify import certify_nearest as _certify
from vqlab.quantizers.ops.triton_prep import interleave, interpreting, prep_rows
from vqlab.quantizers.ops.triton_tuning import _default_splits, autotuned

PRECISIONS = ("exact", "fast")


class TileConfig(NamedTuple):
    """One launch configuration; ``None`` fields of the search are autotuned or derived.

    block_n/block_k/block_d: rows, codes and dimensions per tile (each >= 16, a power of 2,
    as ``tl.dot`` needs). splits: codebook ranges run in parallel (``None`` = by occupancy).
    """

    block_n: int = 16
    block_k: int = 16
    block_d: int = 16
    num_warps: int = 4
    num_stages: int = 2
    splits: int | None = None


@triton.jit
def _insert4(v, j, b0, i0, b1, i1, b2, i2, b3, i3):
    """Insert ``(v, j)`` into the per-row sorted list ``b0 <= b1 <= b2 <= b3``.

    Returns the new list and the entry that dropped out of it (the largest of the five), so
    two calls chain into a list of 8. Strict ``<`` keeps an earlier entry ahead of an equal
    later one.
    """
    # temporaries, not tuple swaps: each step reads the old values of both slots
    t = v < b0
    nb, ni = tl.where(t, v, b0), tl.where(t, j, i0)
    v, j = tl.where(t, b0, v), tl.where(t, i0, j)
    b0, i0 = nb, ni
    t = v < b1
    nb, ni = tl.where(t, v, b1), tl.where(t, j, i1)
    v, j = tl.where(t, b1, v), tl.where(t, i1, j)
    b1, i1 = nb, ni
    t = v < b2
    nb, ni = tl.where(t, v, b2), tl.where(t, j, i2)
    v, j = tl.where(t, b2, v), tl.where(t, i2, j)
    b2, i2 = nb, ni
    t = v < b3
    nb, ni = tl.where(t, v, b3), tl.where(t, j, i3)
    v, j = tl.where(t, b3, v), tl.where(t, i3, j)
    return b0, i0, b1, i1, b2, i2, nb, ni, v, j


@triton.jit
def _insert8(v, j, b0, i0, b1, i1, b2, i2, b3, i3, b4, i4, b5, i5, b6, i6, b7, i7):
    """Insert ``(v, j)`` into the per-row sorted list of 8 (two chained lists of 4).

    Returns the new list and, last, the score that dropped out of it (``inf`` while the list
    was not full), which the certificate's discarded minimum takes in.
    """
    b0, i0, b1, i1, b2, i2, b3, i3, v, j = _insert4(v, j, b0, i0, b1, i1, b2, i2, b3, i3)
    b4, i4, b5, i5, b6, i6, b7, i7, v, j = _insert4(v, j, b4, i4, b5, i5, b6, i6, b7, i7)
    return b0, i0, b1, i1, b2, i2, b3, i3, b4, i4, b5, i5, b6, i6, b7, i7, v


@triton.jit
def _sq_dist(
    x_rows,
    row_ok,
    r_ptr,
    cand,
    approx,
    stride_xd,
    stride_rn,
    stride_rd,
    D: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    """fp32 ``||x - r[cand]||^2`` per row, (BLOCK_N,); ``inf`` where the slot was never filled.

    BLOCK_D is a narrow epilogue chunk: a wide one holds two (BLOCK_N, D) fp32 tiles in
    registers at once and spills.
    """
    ok = row_ok & (approx < float("inf"))
    r_rows = r_ptr + cand.to(tl.int64)[:, None] * stride_rn
    total = tl.zeros(approx.shape, tl.float32)
    for d0 in range(0, D, BLOCK_D):
        dd = d0 + tl.arange(0, BLOCK_D)
        m = ok[:, None] & (dd[None, :] < D)
        xv = tl.load(x_rows + dd[None, :] * stride_xd, mask=m, other=0.0).to(tl.float32)
        rv = tl.load(r_rows + dd[None, :] * stride_rd, mask=m, other=0.0).to(tl.float32)
        diff = xv - rv
        total += tl.sum(diff * diff, axis=1)
    return tl.where(ok, total, float("inf"))


@triton.jit
def _pick(d, i, bd, bi):
    """Lexicographic (distance, index) minimum of two candidates per row."""
    t = (d < bd) | ((d == bd) & (i < bi))
    return tl.where(t, d, bd), tl.where(t, i, bi)


@triton.jit
def _top2(s, offs_k):
    """A tile's two best scores (and their tile columns) per row, and its third-best score.

    s: (BLOCK_N, BLOCK_K) scores. The third-best bounds every code of the tile not inserted.
    """
    v, j = tl.min(s, axis=1, return_indices=True, return_indices_tie_break_left=True)
    s = tl.where(offs_k[None, :] == j[:, None], float("inf"), s)  # mask the winner, reduce again
    v2, j2 = tl.min(s, axis=1, return_indices=True, return_indices_tie_break_left=True)
    s = tl.where(offs_k[None, :] == j2[:, None], float("inf"), s)
    return v, j, v2, j2, tl.min(s, axis=1)


@triton.jit
def _rescore8(
    x_rows, row_ok, r_ptr, b0, i0, b1, i1, b2, i2, b3, i3, b4, i4, b5, i5, b6, i6, b7, i7,
    stride_xd, stride_rn, stride_rd, D: tl.constexpr, EPI_D: tl.constexpr,
):  # fmt: skip
    """Re-score the 8 candidates against the original x and codebook in fp32; returns the
    (distance, index) winner per row, each (BLOCK_N,)."""
    dist = _sq_dist(x_rows, row_ok, r_ptr, i0, b0, stride_xd, stride_rn, stride_rd, D, EPI_D)
    best_i = i0
    dm = _sq_dist(x_rows, row_ok, r_ptr, i1, b1, stride_xd, stride_rn, stride_rd, D, EPI_D)
    dist, best_i = _pick(dm, i1, dist, best_i)
    dm = _sq_dist(x_rows, row_ok, r_ptr, i2, b2, stride_xd, stride_rn, stride_rd, D, EPI_D)
    dist, best_i = _pick(dm, i2, dist, best_i)
    dm = _sq_dist(x_rows, row_ok, r_ptr, i3, b3, stride_xd, stride_rn, stride_rd, D, EPI_D)
    dist, best_i = _pick(dm, i3, dist, best_i)
    dm = _sq_dist(x_rows, row_ok, r_ptr, i4, b4, stride_xd, stride_rn, stride_rd, D, EPI_D)
    dist, best_i = _pick(dm, i4, dist, best_i)
    dm = _sq_dist(x_rows, row_ok, r_ptr, i5, b5, stride_xd, stride_rn, stride_rd, D, EPI_D)
    dist, best_i = _pick(dm, i5, dist, best_i)
    dm = _sq_dist(x_rows, row_ok, r_ptr, i6, b6, stride_xd, stride_rn, stride_rd, D, EPI_D)
    dist, best_i = _pick(dm, i6, dist, best_i)
    dm = _sq_dist(x_rows, row_ok, r_ptr, i7, b7, stride_xd, stride_rn, stride_rd, D, EPI_D)
    return _pick(dm, i7, dist, best_i)


@triton.jit
def _exact_dist(x_rows, row_ok, best, stride_xd, D: tl.constexpr, EPI_D: tl.constexpr):
    """``best + ||x||^2`` per row (BLOCK_N,): the exact mode's distance, clamped at 0."""
    x_sq = tl.zeros(best.shape, tl.float32)
    for d0 in range(0, D, EPI_D):
        dd = d0 + tl.arange(0, EPI_D)
        m = row_ok[:, None] & (dd[None, :] < D)
        xv = tl.load(x_rows + dd[None, :] * stride_xd, mask=m, other=0.0).to(tl.float32)
        x_sq += tl.sum(xv * xv, axis=1)
    # cancellation can push a tiny distance below zero
    return tl.maximum(best + x_sq, 0.0)


@triton.jit
def _nearest_kernel(
    x_ptr, xs_ptr, xl_ptr, c_ptr, c_sq_ptr, r_ptr, idx_ptr, dist_ptr, disc_ptr,
    N, K, k_per_split, G, S,
    stride_xn, stride_xd, stride_sn, stride_sd, stride_cn, stride_cd, stride_rn, stride_rd,
    N_BUCKET, K_BUCKET,  # autotuning keys only
    D: tl.constexpr, FAST: tl.constexpr,
    BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_D: tl.constexpr,
):  # fmt: skip
    """Grid (row blocks, splits); writes idx/dist (and in fast mode disc) of shape (splits, N).

    exact: xs = x, c = r = the codebook (any strides, any float dtype); xl, disc unused.
    fast: xs/xl = hi/lo bf16 halves of ``x - mu`` (N, D), c = ``bf16(codebook - mu)`` (K, D),
    both contiguous; ``x`` and the codebook ``r`` are read again only to re-score. disc: the
    lowest bf16 score of any code of the range that is not among the 8 re-scored ones (a
    lower bound: a tile's third-best score stands for all its codes after the second), for
    :func:`_certify`.
    """
    NUM_D: tl.constexpr = (D + BLOCK_D - 1) // BLOCK_D
    EPI_D: tl.constexpr = 32 if BLOCK_D > 32 else BLOCK_D  # chunk of the per-row epilogues
    pid_n = tl.program_id(0)
    pid_s = tl.program_id(1)
    rows = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    row_ok = rows < N
    offs_k = tl.arange(0, BLOCK_K)
    offs_d = tl.arange(0, BLOCK_D)
    # int64 before multiplying by a stride: N * stride can pass 2^31 at large N and D
    s_rows = rows.to(tl.int64)[:, None] * stride_sn  # (BLOCK_N, 1) offsets
    k_lo = pid_s * k_per_split
    k_hi = tl.minimum(k_lo + k_per_split, K)

    if NUM_D == 1:
        # the whole row fits one chunk: load x once, outside the codebook loop
        m = row_ok[:, None] & (offs_d[None, :] < D)
        x_hi = tl.load(xs_ptr + s_rows + offs_d[None, :] * stride_sd, mask=m, other=0.0)
        if FAST:
            x_lo = tl.load(xl_ptr + s_rows + offs_d[None, :] * stride_sd, mask=m, other=0.0)
        else:
            x_hi = x_hi.to(tl.float32)

    inf = float("inf")
    best = tl.full((BLOCK_N,), inf, tl.float32)
    best_i = tl.zeros((BLOCK_N,), tl.int32)
    if FAST:  # the running list of 8 candidates: best/best_i, then b1..b7 / i1..i7
        b1, b2, b3, b4, b5, b6, b7 = best, best, best, best, best, best, best
        i1, i2, i3, i4, i5, i6, i7 = best_i, best_i, best_i, best_i, best_i, best_i, best_i
        disc = best  # lowest score of a code that left (or never entered) the list

    for k0 in range(k_lo, k_hi, BLOCK_K):
        cols = k0 + offs_k
        col_ok = cols < k_hi
        c_rows = c_ptr + cols.to(tl.int64)[:, None] * stride_cn  # (BLOCK_K, 1) pointers
        if NUM_D == 1:
            mc = col_ok[:, None] & (offs_d[None, :] < D)
            c_tile = tl.load(c_rows + offs_d[None, :] * stride_cd, mask=mc, other=0.0)
            if FAST:
                # lo first: the small term is summed before the large one
                acc = tl.dot(x_lo, tl.trans(c_tile))
                acc = tl.dot(x_hi, tl.trans(c_tile), acc)
            else:
                acc = tl.dot(x_hi, tl.trans(c_tile.to(tl.float32)), input_precision="ieee")
        else:
            acc = tl.zeros((BLOCK_N, BLOCK_K), tl.float32)
            # a loop, not static_range: unrolled chunks each got their own pipeline buffers
            for d0 in range(0, D, BLOCK_D):
                dd = d0 + offs_d
                m = row_ok[:, None] & (dd[None, :] < D)
                mc = col_ok[:, None] & (dd[None, :] < D)
                xc = tl.load(xs_ptr + s_rows + dd[None, :] * stride_sd, mask=m, other=0.0)
                cc = tl.load(c_rows + dd[None, :] * stride_cd, mask=mc, other=0.0)
                if FAST:
                    xl = tl.load(xl_ptr + s_rows + dd[None, :] * stride_sd, mask=m, other=0.0)
                    acc = tl.dot(xl, tl.trans(cc), acc)
                    acc = tl.dot(xc, tl.trans(cc), acc)
                else:
                    acc = tl.dot(
                        xc.to(tl.float32), tl.trans(cc.to(tl.float32)), acc, input_precision="ieee"
                    )
        # ||x||^2 is constant per row, so it joins only at the end; padded codes score inf
        c_sq = tl.load(c_sq_ptr + cols, mask=col_ok, other=inf)
        s = c_sq[None, :] - 2.0 * acc  # (BLOCK_N, BLOCK_K)
        if FAST:
            v, j, v2, j2, third = _top2(s, offs_k)
            disc = tl.minimum(disc, third)
            # copy row p holds code (p % G) * S + p // G (see triton_prep.interleave)
            p, p2 = j + k0, j2 + k0
            best, best_i, b1, i1, b2, i2, b3, i3, b4, i4, b5, i5, b6, i6, b7, i7, gone = _insert8(
                v, (p % G) * S + p // G,
                best, best_i, b1, i1, b2, i2, b3, i3, b4, i4, b5, i5, b6, i6, b7, i7,
            )  # fmt: skip
            disc = tl.minimum(disc, gone)
            best, best_i, b1, i1, b2, i2, b3, i3, b4, i4, b5, i5, b6, i6, b7, i7, gone = _insert8(
                v2, (p2 % G) * S + p2 // G,
                best, best_i, b1, i1, b2, i2, b3, i3, b4, i4, b5, i5, b6, i6, b7, i7,
            )  # fmt: skip
            disc = tl.minimum(disc, gone)
        else:
            v, j = tl.min(s, axis=1, return_indices=True, return_indices_tie_break_left=True)
            # strict < keeps the earlier tile (the lower index) on ties
            take = v < best
            best = tl.where(take, v, best)
            best_i = tl.where(take, j + k0, best_i)

    x_rows = x_ptr + rows.to(tl.int64)[:, None] * stride_xn  # (BLOCK_N, 1) pointers
    if FAST:
        dist, best_i = _rescore8(
            x_rows, row_ok, r_ptr, best, best_i, b1, i1, b2, i2, b3, i3, b4, i4, b5, i5, b6, i6,
            b7, i7, stride_xd, stride_rn, stride_rd, D, EPI_D,
        )  # fmt: skip
    else:
        dist = _exact_dist(x_rows, row_ok, best, stride_xd, D, EPI_D)

    out = pid_s.to(tl.int64) * N + rows
    tl.store(idx_ptr + out, best_i.to(tl.int64), mask=row_ok)
    tl.store(dist_ptr + out, dist, mask=row_ok)
    if FAST:
        tl.store(disc_ptr + out, disc, mask=row_ok)


_TUNED = {False: autotuned(_nearest_kernel, False), True: autotuned(_nearest_kernel, True)}


@torch.no_grad()
def nearest_code_triton(
    x: torch.Tensor,
    codebook: torch.Tensor,
    *,
    precision: str = "exact",
    config: TileConfig | None = None,
    stats: dict | None = None,
    certify: bool = True,
    exact: Callable[[torch.Tensor, torch.Tensor], NearestCode] | None = None,
) -> NearestCode:
    """Nearest code of every row of ``x`` by squared Euclidean distance, fused in one kernel.

    x: (N, D), codebook: (K, D); fp16, bf16 or fp32, any strides, on CUDA (or on the CPU under
    ``TRITON_INTERPRET=1``). Returns :class:`NearestCode`: (N,) int64 indices (lowest on ties)
    and (N,) fp32 squared distances.

    precision: ``"exact"`` (fp32 scoring, no tf32) or ``"fast"`` (bf16 tensor-core scoring
    against a rounded codebook, fp32 re-scoring of the best 8 candidates, a certificate per
    row and an exact search of the rows it fails; see the module docstring). Both give the
    exact nearest code up to fp32 rounding. config: a fixed :class:`TileConfig`; ``None``
    autotunes on CUDA and uses the 16x16x16 default under the interpreter.
    stats: a dict to which fast mode adds ``rows`` and ``fallback_rows`` (the rows searched
    again exactly), across calls. certify: ``False`` skips the certificate (and its sync) and
    returns the top-8 list's pick: for measuring what the certificate costs, not for use.
    exact: the exact search ``(x, codebook) -> NearestCode`` for the rows the certificate
    fails; ``None`` = :func:`~vqlab.quantizers.nearest_torch.nearest_code_torch`
    (:func:`vqlab.quantizers.distance.nearest_code` passes the backend ``auto`` picks).

    Extra memory: (K,) norms; fast adds bf16 copies of ``x - mu`` (2 x N x D) and of
    ``codebook - mu`` (K x D) and (splits, N) discarded scores; split codebooks add
    (splits, N) partial results. Fast mode syncs once (to gather the rows to search again).
    """
    check_search_inputs(x, codebook)
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose one of {PRECISIONS}")
    if x.device.type != "cuda" and not interpreting():
        raise RuntimeError(
            f"the triton backend needs CUDA tensors (got {x.device}); use backend='torch' on "
            "the CPU, or set TRITON_INTERPRET=1 before importing triton to run the interpreter"
        )
    n, d = x.shape
    k = codebook.shape[0]
    if d == 0:
        raise ValueError("nearest_code_triton needs D >= 1")
    fast = precision == "fast"
    indices = torch.empty(n, dtype=torch.long, device=x.device)
    distances = torch.empty(n, dtype=torch.float32, device=x.device)
    if n == 0:
        return NearestCode(indices, distances)
    if interpreting() and config is None:
        config = TileConfig()

    if fast:
        # centre both sides on the codebook mean: rounding then errs relative to |c - mu|,
        # and a common offset of data and codes (non-zero-mean latents) costs nothing
        mu = codebook.mean(dim=0, dtype=torch.float32)  # (D,)
        g, s = interleave(k)
        scored, _, c_sq = prep_rows(codebook, mu, lo=False, sq=True, interleave=(g, s))
        x_hi, x_lo, _ = prep_rows(x, mu, lo=True, sq=False)
    else:
        g, s = k, 1  # codes in their own order
        scored, x_hi, x_lo = codebook, x, x
        c_sq = prep_rows(codebook, None, lo=False, sq=True)[2]
    rows_scanned = g * s  # K, or K plus the padding rows of the interleaved copy

    splits = config.splits if config is not None and config.splits else None
    splits = min(splits or _default_splits(n, k, x.device), k)
    # range boundaries on multiples of 128, the widest codebook tile: no tile straddles two
    k_per_split = triton.cdiv(triton.cdiv(rows_scanned, splits), 128) * 128
    splits = triton.cdiv(rows_scanned, k_per_split)
    if splits == 1:
        part_i, part_d = indices, distances
    else:
        part_i = torch.empty((splits, n), dtype=torch.long, device=x.device)
        part_d = torch.empty((splits, n), dtype=torch.float32, device=x.device)
    # fast: each range's lowest discarded score, for the certificate
    part_t = torch.empty((splits, n), dtype=torch.float32, device=x.device) if fast else part_d

    args = (
        x, x_hi, x_lo, scored, c_sq, codebook, part_i, part_d, part_t, n, rows_scanned, k_per_split,
        g, s,
        x.stride(0), x.stride(1), x_hi.stride(0), x_hi.stride(1),
        scored.stride(0), scored.stride(1), codebook.stride(0), codebook.stride(1),
        n.bit_length(), k.bit_length(), d, fast,
    )  # fmt: skip
    if config is None:

        def grid(meta: dict) -> tuple[int, int]:
            return (triton.cdiv(n, meta["BLOCK_N"]), splits)

        _TUNED[fast][grid](*args)
    else:
        _nearest_kernel[(triton.cdiv(n, config.block_n), splits)](
            *args,
            BLOCK_N=config.block_n,
            BLOCK_K=config.block_k,
            BLOCK_D=config.block_d,
            num_warps=config.num_warps,
            num_stages=config.num_stages,
        )
    if splits > 1:
        # lexicographic (distance, index): with the interleaved copy a lower split need not
        # hold the lower index
        distances = part_d.min(dim=0).values
        tied = part_d == distances[None]  # (splits, N)
        indices = torch.where(tied, part_i, k).min(dim=0).values
    if fast and certify:
        ok = _certify(x, mu, c_sq, part_t.min(dim=0).values, distances, x_hi.dtype)
        indices, distances = _search_again(x, codebook, indices, distances, ok, stats, exact)
    return NearestCode(indices, distances)


def _search_again(
    x: torch.Tensor,
    codebook: torch.Tensor,
    indices: torch.Tensor,
    distances: torch.Tensor,
    ok: torch.Tensor,
    stats: dict | None,
    exact: Callable[[torch.Tensor, torch.Tensor], NearestCode] | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The fast answer with every row that ``ok`` (N,) bool did not certify searched exactly.

    x: (N, D), codebook: (K, D), indices/distances: (N,) fast results. Adds ``rows`` and
    ``fallback_rows`` to ``stats``. One sync (which rows the bf16 scores could not settle).
    """
    redo = torch.nonzero(~ok).squeeze(1)
    if stats is not None:
        stats["rows"] = stats.get("rows", 0) + x.shape[0]
        stats["fallback_rows"] = stats.get("fallback_rows", 0) + redo.numel()
    if redo.numel():
        xr = x[redo]
        picked = (exact or nearest_code_torch)(xr, codebook).indices
        indices, distances = indices.clone(), distances.clone()
        indices[redo] = picked
        # as the kernel's re-scoring does: the difference, not the expanded form
        distances[redo] = (xr.float() - codebook[picked].float()).square().sum(dim=1)
    return indices, distances
