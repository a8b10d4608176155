"""VectorQuantizer: nearest-code quantization with a straight-through gradient.

Glossary: ``z_e`` encoder output, ``z_q`` its quantized value, ``indices`` the chosen codes,
``K`` = ``codebook_size``, ``D`` = ``dim``.

Losses (the VQ-VAE objective with beta on the right term):
- commitment ``beta * ||z_e - sg(z_q)||^2`` pulls the encoder to its code;
- codebook ``||sg(z_e) - z_q||^2`` moves the codes, only when ``update="grad"``.
With ``update="ema"`` the codes follow the exponential moving average of their assigned encoder
outputs instead (:mod:`vqlab.quantizers.ema`), and the codebook is a buffer with no gradient.
Both mean over elements (positions x D), as ``F.mse_loss`` does.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from vqlab.quantizers.distance import DEFAULT_MAX_BYTES, nearest_code
from vqlab.quantizers.ema import batch_statistics, ema_update
from vqlab.quantizers.kmeans import kmeans, kmeans_plusplus

UPDATES = ("ema", "grad")
INIT_METHODS = ("kmeans", "kmeans++", "random_normal", "random_uniform", "sample")


class VQOutput(NamedTuple):
    """quantized: like ``z_e``; indices: ``z_e``'s shape without D (int64); loss: scalar;
    losses: named scalar terms (``commitment``, plus ``codebook`` when update="grad")."""

    quantized: torch.Tensor
    indices: torch.Tensor
    loss: torch.Tensor
    losses: dict[str, torch.Tensor]


class VectorQuantizer(nn.Module):
    """Quantize ``(..., D)`` (or channel-first ``(B, D, H, W)`` with ``channel_dim=1``) inputs.

    Args:
        dim: code dimension D.
        codebook_size: number of codes K.
        update: ``"ema"`` (codebook is a buffer moved by EMA) or ``"grad"`` (a Parameter trained by
            the codebook loss).
        beta: weight of the commitment loss.
        decay, eps: EMA decay and Laplace smoothing (``update="ema"``).
        dead_code_threshold: codes whose EMA usage (expected assignments per step) falls below
            this are re-seeded from the current batch's encoder outputs; 0 turns it off.
        channel_dim: the axis of D in the input (-1, or 1 for ``(B, D, H, W)``).
        max_bytes: bound on the distance tile of the nearest-code search.
    """

    def __init__(
        self,
        dim: int,
        codebook_size: int,
        *,
        update: str = "ema",
        beta: float = 0.25,
        decay: float = 0.99,
        eps: float = 1e-5,
        dead_code_threshold: float = 0.0,
        channel_dim: int = -1,
        max_bytes: int = DEFAULT_MAX_BYTES,
    ) -> None:
        super().__init__()
        if update not in UPDATES:
            raise ValueError(f"update={update!r} is not valid; choose one of {list(UPDATES)}")
        if dim < 1 or codebook_size < 1:
            raise ValueError(f"dim and codebook_size must be >= 1; got {dim}, {codebook_size}")
        if not 0.0 < decay < 1.0:
            raise ValueError(f"decay must lie in (0, 1); got {decay}")
        self.dim, self.codebook_size, self.update = dim, codebook_size, update
        self.beta, self.decay, self.eps = beta, decay, eps
        self.dead_code_threshold = dead_code_threshold
        self.channel_dim, self.max_bytes = channel_dim, max_bytes
        initial = torch.randn(codebook_size, dim)
        if update == "grad":
            self.codebook = nn.Parameter(initial)
        else:
            self.register_buffer("codebook", initial)
            self.register_buffer("ema_sums", initial.clone())  # (K, D)
        # EMA of assignments per step: the EMA cluster size, and the usage the restart reads.
        self.register_buffer("ema_counts", torch.ones(codebook_size))  # (K,)
        self.register_buffer("initialized", torch.tensor(False))
        self.register_buffer("restarts", torch.tensor(0, dtype=torch.long))

    # ------------------------------------------------------------------ shapes
    def _flatten(self, z_e: torch.Tensor) -> tuple[torch.Tensor, torch.Size]:
        if z_e.dim() < 1 or z_e.shape[self.channel_dim] != self.dim:
            raise ValueError(
                f"expected D={self.dim} on axis {self.channel_dim}; got input of shape "
                f"{tuple(z_e.shape)}"
            )
        if not z_e.is_floating_point():
            raise TypeError(f"VectorQuantizer needs a floating-point input; got {z_e.dtype}")
        z = z_e.movedim(self.channel_dim, -1)  # (..., D)
        return z.reshape(-1, self.dim), z.shape[:-1]

    def _unflatten(self, flat: torch.Tensor, lead: torch.Size) -> torch.Tensor:
        return flat.reshape(*lead, self.dim).movedim(-1, self.channel_dim)

    def lookup(self, indices: torch.Tensor) -> torch.Tensor:
        """Codes of ``indices`` (any shape) -> ``(*indices.shape, D)``, or channel-first."""
        flat = F.embedding(indices.reshape(-1), self.codebook)
        return self._unflatten(flat, indices.shape)

    # ----------------------------------------------------------------- forward
    def forward(self, z_e: torch.Tensor) -> VQOutput:
        """z_e: (..., D) -> VQOutput. Runs in fp32 even under autocast."""
        flat, lead = self._flatten(z_e)
        with torch.autocast(device_type=flat.device.type, enabled=False):
            z = flat.float()  # (N, D)
            indices = nearest_code(z.detach(), self.codebook.detach(), max_bytes=self.max_bytes)[0]
            z_q = F.embedding(indices, self.codebook)  # (N, D)
            commitment = F.mse_loss(z, z_q.detach())
            losses = {"commitment": commitment}
            loss = self.beta * commitment
            if self.update == "grad":
                losses["codebook"] = F.mse_loss(z_q, z.detach())
                loss = loss + losses["codebook"]
            if self.training:
                self._update_statistics(z.detach(), indices)
            # straight-through: the value is exactly z_q (z - sg(z) is exactly 0), the gradient
            # flows to z unchanged; written this way quantized == lookup(indices) bit for bit
            out = z_q.detach() + (z - z.detach())
        quantized = self._unflatten(out.to(z_e.dtype), lead)
        return VQOutput(quantized, indices.reshape(lead), loss, losses)

    @torch.no_grad()
    def _update_statistics(self, z: torch.Tensor, indices: torch.Tensor) -> None:
        counts, sums = batch_statistics(z, indices, self.codebook_size)
        if self.update == "ema":
            state = ema_update(
                self.ema_counts, self.ema_sums, counts, sums, decay=self.decay, eps=self.eps
            )
            self.ema_counts.copy_(state.counts)
            self.ema_sums.copy_(state.sums)
            self.codebook.copy_(state.codebook)
        else:
            self.ema_counts.mul_(self.decay).add_(counts, alpha=1.0 - self.decay)
        if self.dead_code_threshold > 0:
            self._restart_dead(z)

    @torch.no_grad()
    def _restart_dead(self, z: torch.Tensor) -> None:
        dead = torch.nonzero(self.ema_counts < self.dead_code_threshold).squeeze(1)
        if dead.numel() == 0:
            return
        pick = torch.randint(0, z.shape[0], (dead.numel(),), device=z.device)
        fresh = z[pick]  # (n_dead, D)
        self.codebook.data[dead] = fresh.to(self.codebook.dtype)
        # a re-seeded code starts at the threshold, so it is not re-seeded again at once
        self.ema_counts[dead] = self.dead_code_threshold
        if self.update == "ema":
            self.ema_sums[dead] = fresh * self.dead_code_threshold
        self.restarts += dead.numel()

    # ------------------------------------------------------------------- init
    @torch.no_grad()
    def init_from_data(
        self, z_e: torch.Tensor, *, method: str = "kmeans", iters: int = 20, seed: int = 0
    ) -> None:
        """Initialise the codebook from encoder outputs ``z_e`` (..., D) (or channel-first).

        method: ``kmeans`` (k-means++ seeding then ``iters`` Lloyd steps), ``kmeans++`` (seeding
        only), ``random_normal`` (per-dim mean/std of the data), ``random_uniform`` (per-dim
        bounding box of the data), ``sample`` (distinct random rows). Needs at least K rows.
        Resets the EMA statistics and sets ``initialized``.
        """
        flat, _ = self._flatten(z_e)
        flat = flat.float()
        k = self.codebook_size
        gen = torch.Generator(device="cpu").manual_seed(seed)
        if method in ("kmeans", "kmeans++", "sample") and flat.shape[0] < k:
            raise ValueError(
                f"init_from_data needs at least codebook_size={k} vectors; got {flat.shape[0]}"
            )
        if method == "kmeans":
            codes = kmeans(flat, k, iters=iters, seed=seed).centroids
        elif method == "kmeans++":
            codes = kmeans_plusplus(flat, k, seed=seed)
        elif method == "random_normal":
            noise = torch.randn(k, self.dim, generator=gen).to(flat.device)
            codes = flat.mean(0) + noise * flat.std(0)
        elif method == "random_uniform":
            lo, hi = flat.min(0).values, flat.max(0).values
            codes = lo + torch.rand(k, self.dim, generator=gen).to(flat.device) * (hi - lo)
        elif method == "sample":
            codes = flat[torch.randperm(flat.shape[0], generator=gen)[:k].to(flat.device)]
        else:
            raise ValueError(f"unknown init method {method!r}; choose one of {list(INIT_METHODS)}")
        self.codebook.data.copy_(codes.to(self.codebook.device))
        self.ema_counts.fill_(1.0)
        if self.update == "ema":
            self.ema_sums.copy_(self.codebook)
        self.initialized.fill_(True)

    def extra_repr(self) -> str:
        return (
            f"dim={self.dim}, codebook_size={self.codebook_size}, update={self.update!r}, "
            f"beta={self.beta}, decay={self.decay}, dead_code_threshold={self.dead_code_threshold}"
        )
