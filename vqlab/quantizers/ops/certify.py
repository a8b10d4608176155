"""The fast search's per-row certificate, in plain torch (no Triton needed to run or test it).

The fused kernel's fast mode (:mod:`vqlab.quantizers.ops.triton_nearest`) scores against a
bf16 copy of the centred codebook and re-scores each row's best 8 candidates in fp32. It also
returns, per row, the lowest score of any code it did not re-score; :func:`certify_nearest`
proves from worst-case rounding bounds that no such code can be as near as the re-scored
winner. Rows it cannot prove are searched again exactly by the caller.

Glossary: ``N`` rows, ``K`` codes, ``D`` code dimension.
"""

from __future__ import annotations

import torch

# unit roundoffs: fp32, and the bound we allow the tensor cores' fp32 accumulation (4x fp32's:
# they need not round to nearest)
_U32 = 2.0**-24
_U_ACC = 2.0**-22


def certify_nearest(
    x: torch.Tensor,
    mu: torch.Tensor,
    c_sq: torch.Tensor,
    discarded: torch.Tensor,
    best: torch.Tensor,
    low: torch.dtype,
) -> torch.Tensor:
    """(N,) bool: the fast search's answer is provably the exact nearest code of the row.

    A code the kernel did not re-score has a computed score ``s >= t`` (``discarded``). With
    ``y = hi + lo`` (the split ``x - mu``) and ``c~`` the rounded code, the score is
    ``||c~||^2 - 2 y.c~`` up to the fp32 accumulation error ``e_s``, so
    ``||y - c~|| >= sqrt(t - e_s + ||y||^2)``. The true distance differs from that by at most
    ``E = |x - mu - y| + |c - mu - c~| <= (2^-16 + 2^-23)|y| + (u + 2^-23) |c~|_max / (1 - u)``
    (``u`` the unit roundoff of the low-precision copy: 2^-8 for bf16). If that lower bound
    exceeds the re-scored best distance (with its fp32 rounding), no skipped code is as near.
    Every constant is a worst case, enlarged by 1%; rows that fail are searched again exactly.

    x: (N, D); mu: (D,); c_sq: fp32 ``||c~||^2`` of the scored copy (``inf`` on padding);
    discarded/best: (N,) fp32; low: dtype of the scored copy.
    """
    d = x.shape[1]
    u = torch.finfo(low).eps / 2  # unit roundoff: 2^-8 for bf16, 2^-11 for fp16
    y_sq = (x.float() - mu).square().sum(dim=1)  # (N,)
    # ||y||^2 from below: y is within 2^-16 of x - mu, and the sum rounds by (D + 1) u32
    y_sq_low = y_sq * (1.0 - 2.0**-14 - (d + 2) * 2 * _U32)
    y = y_sq.sqrt() * (1.0 + 2.0**-15)  # |y| from above
    c_max = torch.where(torch.isfinite(c_sq), c_sq, 0.0).max().sqrt() * (1.0 + (d + 2) * _U32)
    e_s = 1.01 * (2 * d + 4) * _U_ACC * (c_max.square() + 2.0 * y * c_max)
    e = 1.01 * ((2.0**-16 + 2.0**-23) * y + (u + 2.0**-23) / (1.0 - u) * c_max)
    lower = (discarded - e_s + y_sq_low).clamp_min(0.0).sqrt() - e  # inf where none skipped
    return (lower > 0) & (lower.square() > best * (1.0 + (d + 3) * 2 * _U32))
