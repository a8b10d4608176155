"""Finite scalar quantization (FSQ, Mentzer et al., arXiv 2309.15505): a fixed grid, no codebook.

Pipeline ``z_e (D) -> in-projection (d = len(levels)) -> bound -> round (straight-through) ->
out-projection (D)``. Channel i takes ``L_i = levels[i]`` values, so the implicit codebook is the
grid of ``K = prod(levels)`` points. Nothing in it is learned, so it cannot collapse, and FSQ has
no loss term (``loss`` is 0 and ``losses`` is empty).

Definitions (those of vector-quantize-pytorch 1.32.0's ``FSQ``; tests/quantizers/test_fsq.py
checks that both give the same indices and outputs):

- bound: ``b(h) = tanh(h + shift) * half - offset`` with ``half = (L - 1)(1 + eps) / 2``,
  ``eps = 1e-3``, ``offset = 1/2`` for even L and 0 for odd L, ``shift = atanh(offset / half)``.
  Rounding ``b`` gives the L integers ``-(L//2) .. L - 1 - L//2`` (for even L one more level
  below zero than above: the half-level offset).
  *Differs from the paper's listing on purpose*, as the peer does: the paper writes
  ``(1 - eps)`` and ``shift = tan(offset / half)``. atanh is the exact inverse, so ``b(0) = 0``
  and the zero input lands on a level's centre; tan agrees only to third order. ``1 + eps``
  instead of ``1 - eps`` moves where the outermost levels start by ``eps (L - 1) / 2`` and leaves
  the set of levels unchanged. Both differences are tested.
- codes: the rounded integer divided by ``L // 2``, so every code value lies in [-1, 1]; these are
  ``implicit_codes`` and what the out-projection reads.
- indices: mixed radix, channel 0 least significant:
  ``index = sum_i digit_i * prod_{j < i} L_j`` with ``digit_i = r_i + L_i // 2`` in ``[0, L_i)``.
- gradient: straight through the rounding only, so ``d z_q / d h = b'(h) / (L // 2)`` (the
  bound's slope), as in the paper.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from vqlab.quantizers.codebook import VQOutput
from vqlab.quantizers.grid import GridQuantizer, fit_grid_projections  # noqa: F401 - re-exported
from vqlab.registry import QUANTIZERS, QuantizerEntry
from vqlab.validation import check_int

BOUND_EPS = 1e-3

# The FSQ paper's recommended levels (its Table 1) for codebooks of 2^8 .. 2^16 codes.
RECOMMENDED_LEVELS: tuple[tuple[int, ...], ...] = (
    (8, 6, 5),  # 240
    (8, 5, 5, 5),  # 1000
    (7, 5, 5, 5, 5),  # 4375
    (8, 8, 8, 6, 5),  # 15360
    (8, 8, 8, 5, 5, 5),  # 64000
)


def fsq_levels_for(codebook_size: int) -> tuple[int, ...]:
    """The paper's recommended ``levels`` whose product is nearest to ``codebook_size``.

    Rule: among the five recommended sets (products 240, 1000, 4375, 15360, 64000), the one that
    minimises ``|log(prod(levels) / K)|`` (nearest by ratio, since K spans orders of magnitude).
    K must lie in [2^8, 2^16], the range the paper recommends for; outside it there is no
    recommendation and a ValueError asks for explicit levels.
    """
    k = check_int(codebook_size, "codebook_size", minimum=1)
    if not 2**8 <= k <= 2**16:
        raise ValueError(
            f"fsq_levels_for covers codebook sizes 2^8..2^16 (the FSQ paper's recommendations); "
            f"got {k}; pass levels explicitly"
        )
    return min(RECOMMENDED_LEVELS, key=lambda lv: abs(math.log(math.prod(lv) / k)))


class FSQ(GridQuantizer):
    """Finite scalar quantization of ``(..., D)`` (or channel-first, ``channel_dim=1``) inputs.

    Args:
        dim: D, the dimension of the encoder outputs and of the quantized output.
        levels: L_i per grid channel, each >= 3 (two levels put the zero input far inside one
            level, where the gradient vanishes; the peer refuses them too; use LFQ for bits).
            ``fsq_levels_for(K)`` picks the paper's set for a codebook size.
        channel_dim: the axis of D in the input (-1, or 1 for ``(B, D, H, W)``).

    A learned ``Linear(D, d)`` / ``Linear(d, D)`` pair surrounds the grid when D != d; without it
    the input is quantized directly.
    """

    def __init__(self, dim: int, levels: tuple[int, ...], *, channel_dim: int = -1) -> None:
        super().__init__()
        self.dim = check_int(dim, "dim", minimum=1)
        self.channel_dim = check_int(channel_dim, "channel_dim")
        levels = tuple(levels)
        if not levels or any(isinstance(v, bool) or not isinstance(v, int) for v in levels):
            raise ValueError(f"levels must be a non-empty tuple of ints; got {levels!r}")
        if min(levels) < 3:
            raise ValueError(f"every level must be >= 3 (use LFQ for two levels); got {levels}")
        self.levels = levels
        self.code_dim = len(levels)  # d
        self.codebook_size = math.prod(levels)  # K
        lv = torch.tensor(levels, dtype=torch.float32)
        half = (lv - 1) * (1 + BOUND_EPS) / 2
        offset = (lv % 2 == 0).float() * 0.5
        basis = torch.cumprod(torch.tensor((1, *levels[:-1])), 0)  # (d,) int64, channel 0 first
        # derived from `levels`, so not saved (persistent=False), only moved with the module
        self.register_buffer("_half", half, persistent=False)
        self.register_buffer("_offset", offset, persistent=False)
        self.register_buffer("_shift", torch.atanh(offset / half), persistent=False)
        self.register_buffer("_width", (lv // 2), persistent=False)  # L // 2 (float)
        self.register_buffer("_levels", torch.tensor(levels), persistent=False)  # int64
        self.register_buffer("_basis", basis, persistent=False)
        codes = self.indices_to_codes(torch.arange(self.codebook_size))  # (K, d)
        self.register_buffer("implicit_codes", codes, persistent=False)
        has_proj = dim != self.code_dim
        self.project_in = nn.Linear(dim, self.code_dim) if has_proj else None
        self.project_out = nn.Linear(self.code_dim, dim) if has_proj else None
        self.register_buffer("initialized", torch.tensor(False))

    # ------------------------------------------------------------------- grid
    def bound(self, h: torch.Tensor) -> torch.Tensor:
        """(..., d) -> (..., d): the bounded values, before rounding (see the module docstring)."""
        return torch.tanh(h + self._shift) * self._half - self._offset

    def snap(self, h: torch.Tensor) -> torch.Tensor:
        return self.quantize(h)

    def quantize(self, h: torch.Tensor) -> torch.Tensor:
        """(..., d) grid-space inputs -> (..., d) codes in [-1, 1], straight-through the round."""
        b = self.bound(h)
        # r + (b - sg(b)): the value is exactly round(b) (so equal to `lookup`), the gradient b's
        r = b.round().detach() + (b - b.detach())
        return r / self._width

    def codes_to_indices(self, codes: torch.Tensor) -> torch.Tensor:
        """(..., d) codes -> (...) int64 indices (mixed radix, channel 0 least significant)."""
        digits = (codes * self._width).round().long() + self._width.long()  # (..., d) in [0, L)
        return (digits * self._basis).sum(-1)

    def indices_to_codes(self, indices: torch.Tensor) -> torch.Tensor:
        """(...) int64 indices -> (..., d) codes; the inverse of :meth:`codes_to_indices`."""
        digits = (indices[..., None] // self._basis) % self._levels  # (..., d)
        return (digits.float() - self._width) / self._width

    # ---------------------------------------------------------------- forward
    def forward(self, z_e: torch.Tensor) -> VQOutput:
        """z_e: (..., D) -> VQOutput(quantized like z_e, indices (...) int64, loss 0, {}).

        Runs in fp32 even under autocast: the rounding must see the exact bounded values.
        """
        flat, lead = self._flatten(z_e)
        with torch.autocast(device_type=flat.device.type, enabled=False):
            codes = self.quantize(self._to_grid(flat.float()))  # (N, d)
            indices = self.codes_to_indices(codes.detach())  # (N,)
            out = self._from_grid(codes)  # (N, D)
        zero = flat.new_zeros((), dtype=torch.float32)  # the grid has no loss to train
        return VQOutput(self._unflatten(out.to(z_e.dtype), lead), indices.reshape(lead), zero, {})

    def extra_repr(self) -> str:
        return f"dim={self.dim}, levels={self.levels}, codebook_size={self.codebook_size}"


def _build(vq, model, input_shape: tuple[int, ...], channel_dim: int) -> FSQ:
    levels = tuple(int(v) for v in vq.levels.split(","))
    return FSQ(model.latent_dim, levels, channel_dim=channel_dim)


QUANTIZERS.register(
    "fsq",
    QuantizerEntry(_build, options=("levels",), fits_codebook=False, title="FSQ layer"),
)
