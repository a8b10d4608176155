"""Codebook mechanics every codebook layer shares: storage, the EMA step, dead-code restart,
and the shapes around them.

Used by :class:`~vqlab.quantizers.vq.VectorQuantizer`, :class:`~vqlab.quantizers.multiscale.
MultiScaleQuantizer` and the grid layers (:mod:`vqlab.quantizers.grid`), so that a fix to one of
these steps reaches every layer. Each function reads and writes the layer's own buffers by their
names, which are the names in every checkpoint:

- ``codebook``: (K, d), a Parameter (``update="grad"``) or a buffer (``"ema"``);
- ``ema_sums``: (K, d) EMA sums of the assigned vectors (``"ema"`` only);
- ``ema_counts``: (K,) EMA of assignments per step (the EMA cluster size, and the usage a
  dead-code restart reads);
- ``initialized``: whether the codes were fitted to data.

Beside them: ``VQOutput`` (what a one-grid layer returns), the init vocabulary ``INIT_METHODS``
and :func:`fit_codes`, which fits K initial codes to data by one of them.

The layer holds ``codebook_size``, ``update``, ``decay`` and ``eps`` as attributes.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from vqlab.quantizers.collective import draw_rows, random_subset
from vqlab.quantizers.ema import ema_update
from vqlab.quantizers.gmm import fit_gmm
from vqlab.quantizers.kmeans import kmeans, kmeans_plusplus
from vqlab.validation import check_integer, check_quantizer_input

INIT_METHODS = ("kmeans", "kmeans++", "random_normal", "random_uniform", "sample", "gmm", "none")


class VQOutput(NamedTuple):
    """quantized: like ``z_e``; indices: ``z_e``'s shape without D (int64); loss: scalar;
    losses: named scalar terms (``commitment``, plus ``codebook`` when update="grad")."""

    quantized: torch.Tensor
    indices: torch.Tensor
    loss: torch.Tensor
    losses: dict[str, torch.Tensor]


def register_codebook(layer: nn.Module, initial: torch.Tensor, update: str) -> None:
    """Store ``initial`` (K, d) as the layer's ``codebook``: a Parameter trained by the codebook
    loss (``update="grad"``), or a buffer moved by the EMA, with its ``ema_sums`` (``"ema"``)."""
    if update == "grad":
        layer.codebook = nn.Parameter(initial)
    else:
        layer.register_buffer("codebook", initial)
        layer.register_buffer("ema_sums", initial.clone())  # (K, d)


def register_statistics(layer: nn.Module, codebook_size: int) -> None:
    """The ``ema_counts`` (K,) (ones: no code starts dead) and ``initialized`` buffers."""
    layer.register_buffer("ema_counts", torch.ones(codebook_size))  # (K,)
    layer.register_buffer("initialized", torch.tensor(False))


def stored_codebook(layer: nn.Module) -> torch.Tensor | None:
    """The ``codebook`` Parameter or buffer of the layer, or None when it stores none (derived
    codes, or before ``__init__`` has stored it)."""
    stored = layer._parameters.get("codebook")
    return stored if stored is not None else layer._buffers.get("codebook")


@torch.no_grad()
def ema_step(layer: nn.Module, counts: torch.Tensor, sums: torch.Tensor | None) -> None:
    """One step of the statistics from a batch's per-code ``counts`` (K,) and ``sums`` (K, d),
    already summed over data-parallel ranks: the EMA codebook update (``update="ema"``), or only
    the usage EMA ``ema_counts`` (``"grad"``, where ``sums`` may be None)."""
    if layer.update == "ema":
        state = ema_update(
            layer.ema_counts, layer.ema_sums, counts, sums, decay=layer.decay, eps=layer.eps
        )
        layer.ema_counts.copy_(state.counts)
        layer.ema_sums.copy_(state.sums)
        layer.codebook.copy_(state.codebook)
    else:
        layer.ema_counts.mul_(layer.decay).add_(counts, alpha=1.0 - layer.decay)


@torch.no_grad()
def reset_statistics(layer: nn.Module) -> None:
    """After the codes were fitted: usage back to one per code, the EMA sums to the codes (so
    the next EMA step starts from them), and ``initialized`` set."""
    layer.ema_counts.fill_(1.0)
    if layer.update == "ema":
        layer.ema_sums.copy_(layer.codebook)
    layer.initialized.fill_(True)


@torch.no_grad()
def restart_dead_codes(
    layer: nn.Module, z: torch.Tensor, store: torch.Tensor, threshold: float
) -> int:
    """Re-seed the codes whose ``ema_counts`` fell below ``threshold`` from rows of ``z`` (N, d);
    returns how many were re-seeded. ``store``: the tensor holding the free codes (K, d).

    The rows come from the global batch and are the same on every rank (in one process exactly
    ``z[randperm(N)[:n]]``). A re-seeded code starts at the threshold, so it is not re-seeded
    again at once.
    """
    dead = torch.nonzero(layer.ema_counts < threshold).squeeze(1)
    if dead.numel() == 0:
        return 0
    fresh = draw_rows(z, dead.numel(), replace=False)  # distinct rows, at most the batch's
    if fresh.shape[0] < dead.numel():
        # more dead codes than rows (K=16384 and a 4096-row batch): a random share of them
        # now, the rest at the next steps, rather than duplicates that stay dead
        dead = random_subset(dead, fresh.shape[0])
    store.data[dead] = fresh.to(store.dtype)
    layer.ema_counts[dead] = threshold
    if layer.update == "ema":
        layer.ema_sums[dead] = fresh * threshold
    return dead.numel()


def flatten(
    z_e: torch.Tensor, dim: int, channel_dim: int, device: torch.device
) -> tuple[torch.Tensor, torch.Size]:
    """The door for hostile input (:mod:`vqlab.validation`: type, shape, device, NaN/Inf in one
    sync), then ``(..., D)`` (D on ``channel_dim``) -> rows (N, D) and the leading shape."""
    check_quantizer_input(z_e, dim=dim, channel_dim=channel_dim, device=device)
    z = z_e.movedim(channel_dim, -1)  # (..., D)
    return z.reshape(-1, dim), z.shape[:-1]


def unflatten(flat: torch.Tensor, lead: torch.Size, dim: int, channel_dim: int) -> torch.Tensor:
    """Rows (N, D) -> ``(*lead, D)`` with D moved back to ``channel_dim``."""
    return flat.reshape(*lead, dim).movedim(-1, channel_dim)


def check_indices(indices: torch.Tensor, codebook_size: int) -> None:
    """Integer codes in [0, K): one sync; an out-of-range index is a device assert on CUDA."""
    check_integer(indices, "indices")
    if indices.numel() > 0:
        lo, hi = (int(v) for v in torch.aminmax(indices.detach()))
        if lo < 0 or hi >= codebook_size:
            raise ValueError(
                f"indices must lie in [0, {codebook_size}); got values in [{lo}, {hi}]"
            )


@torch.no_grad()
def fit_codes(
    x: torch.Tensor, k: int, method: str, *, iters: int = 20, seed: int = 0
) -> torch.Tensor | None:
    """K initial codes (K, d) from the rows of ``x`` (N, d) by ``method`` (see
    :meth:`VectorQuantizer.init_from_data`); None for ``"none"``. ``iters``: Lloyd steps for
    ``kmeans``, EM steps (after as many Lloyd steps) for ``gmm``. Seeded, so deterministic."""
    gen = torch.Generator(device="cpu").manual_seed(seed)
    if method == "kmeans":
        return kmeans(x, k, iters=iters, seed=seed).centroids
    if method == "kmeans++":
        return kmeans_plusplus(x, k, seed=seed)
    if method == "random_normal":
        noise = torch.randn(k, x.shape[1], generator=gen).to(x.device)
        return x.mean(0) + noise * x.std(0)
    if method == "random_uniform":
        lo, hi = x.min(0).values, x.max(0).values
        return lo + torch.rand(k, x.shape[1], generator=gen).to(x.device) * (hi - lo)
    if method == "sample":
        return x[torch.randperm(x.shape[0], generator=gen)[:k].to(x.device)]
    if method == "gmm":
        return fit_gmm(x, k, iters=iters, kmeans_iters=iters, seed=seed).means
    if method == "none":
        return None
    raise ValueError(f"unknown init method {method!r}; choose one of {list(INIT_METHODS)}")
