"""What FSQ and LFQ share: a fixed grid of codes between learned projections.

A grid quantizer has no codebook to learn: its K codes (``implicit_codes``, (K, d)) are fixed,
and a ``Linear(D, d)`` / ``Linear(d, D)`` pair surrounds the grid when D != d. Subclasses give
``indices_to_codes``, ``codes_to_indices``, ``snap`` (grid-space values -> their codes) and
``init_scale`` (the spread the in-projection whitens to); this base gives the shapes,
``codebook`` (the codes in the input space, what the diagnostics read), ``lookup``,
``to_code_space`` and ``init_from_data``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from vqlab.quantizers.codebook import INIT_METHODS, check_indices, flatten, unflatten
from vqlab.validation import check_int


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


class GridQuantizer(nn.Module):
    """The base of :class:`~vqlab.quantizers.fsq.FSQ` and :class:`~vqlab.quantizers.lfq.LFQ`
    (module docstring). Attributes the subclass sets: ``dim``, ``code_dim``, ``codebook_size``,
    ``channel_dim``, ``project_in``/``project_out`` (or None), the ``implicit_codes`` and
    ``initialized`` buffers."""

    init_scale = 1.0

    def snap(self, h: torch.Tensor) -> torch.Tensor:
        """Grid-space values (N, d) -> their codes (N, d)."""
        raise NotImplementedError

    def indices_to_codes(self, indices: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

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
        return flatten(z_e, self.dim, self.channel_dim, self.initialized.device)

    def _unflatten(self, flat: torch.Tensor, lead: torch.Size) -> torch.Tensor:
        return unflatten(flat, lead, self.dim, self.channel_dim)

    def to_code_space(self, z_e: torch.Tensor) -> torch.Tensor:
        """Encoder outputs (..., D) (or channel-first) -> (N, D): the flattened ``z_e`` itself.

        ``codebook`` lives in the input space (the grid after the out-projection), so the
        vectors that diagnostics set against it are the encoder outputs, not their projections.
        """
        return self._flatten(z_e)[0].float()

    def lookup(self, indices: torch.Tensor) -> torch.Tensor:
        """``indices`` (any shape) -> ``(*indices.shape, D)`` (or channel-first): code, then the
        out-projection; equal to ``forward``'s ``quantized`` (bit for bit in fp32)."""
        check_indices(indices, self.codebook_size)
        with torch.autocast(device_type=indices.device.type, enabled=False):
            flat = self._from_grid(self.indices_to_codes(indices.reshape(-1)))  # (N, D)
        return self._unflatten(flat, indices.shape)

    # ------------------------------------------------------------------- init
    @torch.no_grad()
    def init_from_data(
        self, z_e: torch.Tensor, *, method: str = "kmeans", iters: int = 20, seed: int = 0
    ) -> None:
        """Fit the projections to encoder outputs ``z_e`` (..., D); the grid itself is fixed.

        There is no codebook to fit, so ``method`` (any of vq.py's ``INIT_METHODS``, accepted so
        that ``vq.init`` passes through), ``iters`` and ``seed`` do not change the result: with
        projections (D != d, and d <= D) they are fitted by :func:`fit_grid_projections` (PCA
        whitened to the grid's scale ``init_scale`` in, least squares out), deterministically;
        ``method="none"`` keeps them as built. Without projections it only sets
        ``initialized``: under the deferred schedule the grid then simply starts quantizing.
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
            fit_grid_projections(
                self.project_in, self.project_out, flat, self.snap, scale=self.init_scale
            )
        self.initialized.fill_(True)
