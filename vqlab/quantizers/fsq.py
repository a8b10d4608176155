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
from collections.abc import Callable

import torch
from torch import nn

from vqlab.quantizers.vq import INIT_METHODS, VQOutput
from vqlab.validation import check_int, check_integer, check_quantizer_input

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


@torch.no_grad()
def fit_grid_projections(
    project_in: nn.Linear,
    project_out: nn.Linear,
    z: torch.Tensor,
    quantize: Callable[[torch.Tensor], torch.Tensor],
    *,
    scale: float = 1.0,
) -> None:
    """Fit the projections around a fixed grid quantizer to encoder outputs ``z`` (N, D).

    ``project_in`` <- the top-d principal axes, centred and whitened to standard deviation
    ``scale`` (the grid's bound is fixed, so unlike k-means codes it cannot move to the data:
    the data is scaled to the grid). ``project_out`` <- the least-squares linear map from the
    quantized codes ``quantize(project_in(z))`` (N, d) back to ``z``: the best linear
    reconstruction of ``z`` from its codes. Why: under deferred quantization the decoder learned
    on raw ``z_e``; random projections at the switch hand it unrelated inputs (as in
    :meth:`VectorQuantizer._fit_projections`). Needs d <= D.
    """
    d = project_in.out_features
    mean = z.mean(0).double()  # (D,)
    centred = z.double() - mean  # (N, D); fp64 for a clean eigh and solve
    evals, vecs = torch.linalg.eigh(centred.T @ centred / z.shape[0])  # increasing variance
    axes = vecs[:, -d:].flip(1).T  # (d, D), by decreasing variance
    # a direction with no variance would get an infinite gain; floor it relative to the largest
    std = evals[-d:].flip(0).clamp_min(evals[-1].clamp_min(1e-30) * 1e-12).sqrt()  # (d,)
    w_in = axes * (scale / std)[:, None]  # (d, D)
    project_in.weight.copy_(w_in)
    project_in.bias.copy_(-(w_in @ mean))
    codes = quantize(project_in(z)).double()  # (N, d)
    design = torch.cat([codes, codes.new_ones(codes.shape[0], 1)], 1)  # (N, d + 1)
    # pinv, not lstsq: a grid channel may be constant on the sample (rank-deficient design)
    sol = torch.linalg.pinv(design) @ z.double()  # (d + 1, D)
    project_out.weight.copy_(sol[:-1].T)
    project_out.bias.copy_(sol[-1])


class FSQ(nn.Module):
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

    @property
    def codebook(self) -> torch.Tensor:
        """(K, D): the implicit codebook in the input space (after the out-projection), so the
        diagnostics that read ``codebook`` against ``to_code_space`` compare like with like."""
        return self._from_grid(self.implicit_codes)

    # ----------------------------------------------------------------- shapes
    def _to_grid(self, flat: torch.Tensor) -> torch.Tensor:
        return self.project_in(flat) if self.project_in is not None else flat

    def _from_grid(self, codes: torch.Tensor) -> torch.Tensor:
        return self.project_out(codes) if self.project_out is not None else codes

    def _flatten(self, z_e: torch.Tensor) -> tuple[torch.Tensor, torch.Size]:
        device = self.initialized.device
        check_quantizer_input(z_e, dim=self.dim, channel_dim=self.channel_dim, device=device)
        z = z_e.movedim(self.channel_dim, -1)  # (..., D)
        return z.reshape(-1, self.dim), z.shape[:-1]

    def _unflatten(self, flat: torch.Tensor, lead: torch.Size) -> torch.Tensor:
        return flat.reshape(*lead, self.dim).movedim(-1, self.channel_dim)

    def to_code_space(self, z_e: torch.Tensor) -> torch.Tensor:
        """Encoder outputs (..., D) (or channel-first) -> (N, D): the flattened ``z_e`` itself.

        ``codebook`` lives in the input space (the grid after the out-projection), so the
        vectors that diagnostics set against it are the encoder outputs, not their projections.
        """
        return self._flatten(z_e)[0].float()

    def lookup(self, indices: torch.Tensor) -> torch.Tensor:
        """``indices`` (any shape) -> ``(*indices.shape, D)`` (or channel-first): code, then the
        out-projection; equal to ``forward``'s ``quantized`` (bit for bit in fp32)."""
        check_integer(indices, "indices")
        if indices.numel() > 0:
            lo, hi = (int(v) for v in torch.aminmax(indices.detach()))
            if lo < 0 or hi >= self.codebook_size:
                raise ValueError(
                    f"indices must lie in [0, {self.codebook_size}); got values in [{lo}, {hi}]"
                )
        with torch.autocast(device_type=indices.device.type, enabled=False):
            flat = self._from_grid(self.indices_to_codes(indices.reshape(-1)))  # (N, D)
        return self._unflatten(flat, indices.shape)

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

    # ------------------------------------------------------------------- init
    @torch.no_grad()
    def init_from_data(
        self, z_e: torch.Tensor, *, method: str = "kmeans", iters: int = 20, seed: int = 0
    ) -> None:
        """Fit the projections to encoder outputs ``z_e`` (..., D); the grid itself is fixed.

        There is no codebook to fit, so ``method`` (any of vq.py's ``INIT_METHODS``, accepted so
        that ``vq.init`` passes through), ``iters`` and ``seed`` do not change the result: with
        projections (D != d, and d <= D) they are fitted by :func:`fit_grid_projections` (PCA
        whitened to unit variance in, least squares out), deterministically; ``method="none"``
        keeps them as built. Without projections it only sets ``initialized``: under the
        deferred schedule FSQ then simply starts quantizing.
        """
        if method not in INIT_METHODS:
            raise ValueError(f"unknown init method {method!r}; choose one of {list(INIT_METHODS)}")
        check_int(iters, "iters", minimum=0)
        check_int(seed, "seed")
        flat = self._flatten(z_e)[0].float()  # (N, D)
        fit = method != "none" and self.project_in is not None and self.code_dim <= self.dim
        if fit:
            if flat.shape[0] < 2:
                raise ValueError(f"init_from_data needs at least 2 vectors; got {flat.shape[0]}")
            fit_grid_projections(self.project_in, self.project_out, flat, self.quantize)
        self.initialized.fill_(True)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, levels={self.levels}, codebook_size={self.codebook_size}"
