"""MultiScaleQuantizer: VAR's multi-scale residual quantizer, one codebook shared by all scales.

For scales ``p_1 < ... < p_S = h`` and a channel-first latent ``z_e`` (B, D, h, h):

    rest = z_e;  f_hat = 0
    for k = 1..S:
        idx_k = nearest code of area(rest, p_k)         (B, p_k, p_k), one shared codebook
        c_k   = phi_k(bicubic(codebook[idx_k], h))      (B, D, h, h)
        f_hat = f_hat + c_k;  rest = rest - c_k

``area`` and ``bicubic`` are skipped at ``p_k == h``. ``phi_k(x) = (1 - r) x + r conv3x3(x)``
with ``r = quant_resi`` (``r = 0``: identity, no parameters); ``share_resi`` convs are shared
over the scales by VAR's tick rule (:func:`phi_choice`). The decoder reads ``f_hat`` through a
straight-through copy, so the codebook and the convs learn only from the codebook loss.

Losses, averaged over the scales on the running reconstructions ``f_hat_k = c_1 + ... + c_k``
as VAR's released ``quant.py`` does (``loss_on="final"`` keeps only ``f_hat_S = f_hat``):
- commitment ``beta * ||z_e - sg(f_hat_k)||^2``, which trains the encoder;
- codebook ``||sg(z_e) - f_hat_k||^2`` (``update="grad"``), which trains codes and convs;
- with ``update="ema"`` the codes follow the EMA of the vectors assigned to them, pooled over
  all scales (each scale's downsampled residual ``area(rest, p_k)`` against its ``idx_k``): one
  update per step, after the pass, so every scale of a step sees the same codebook. The convs,
  when ``r > 0``, still learn from the same squared error, reported as ``phi``.
With ``scales=(h,)`` and ``quant_resi=0`` the layer is the single-scale ``VectorQuantizer``.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vqlab.errors import ConfigError
from vqlab.quantizers.codebook import (
    INIT_METHODS,
    check_indices,
    ema_step,
    fit_codes,
    register_codebook,
    reset_statistics,
    stored_codebook,
)
from vqlab.quantizers.collective import all_reduce_sum
from vqlab.quantizers.distance import DEFAULT_MAX_BYTES, nearest_code
from vqlab.quantizers.ema import batch_statistics
from vqlab.quantizers.vq import SEARCHES, UPDATES
from vqlab.registry import QUANTIZERS, QuantizerEntry
from vqlab.validation import (
    check_init_args,
    check_integer,
    check_quantizer_args,
    check_quantizer_input,
)

LOSS_ON = ("every_scale", "final")
INIT_WAYS = ("finest", "pyramid", "coarse_then_all")


class MultiScaleOutput(NamedTuple):
    """quantized: like ``z_e``; indices: (B, L) int64, L = sum p_k^2, coarse to fine, row-major
    within a scale; loss: scalar; losses: named scalar terms (``commitment``, plus ``codebook``
    with update="grad", or ``phi`` with update="ema" and quant_resi > 0); level_indices: S
    tensors (B, p_k, p_k); contributions: S tensors ``phi_k`` outputs like ``z_e``, summing (in
    order, from zero) to ``quantized``'s value."""

    quantized: torch.Tensor
    indices: torch.Tensor
    loss: torch.Tensor
    losses: dict[str, torch.Tensor]
    level_indices: list[torch.Tensor]
    contributions: list[torch.Tensor]


def phi_choice(num_scales: int, share: int) -> list[int]:
    """Which of ``share`` convs each of ``num_scales`` scales uses, by VAR's rule.

    Scale k (0-based) sits at ``k / (S - 1)`` in [0, 1] (0 when S = 1) and takes the conv whose
    tick is nearest, lowest index on ties. VAR's ticks are ``linspace(1/(3n), 1 - 1/(3n), n)``
    for n = 4 convs and ``linspace(1/(2n), 1 - 1/(2n), n)`` otherwise; ``share = 1`` is one conv
    for all. Computed in float64 with numpy as VAR does, since S = 10, n = 4 has a tie in exact
    arithmetic (2/9 is 5/36 from two ticks) that rounding settles, as in VAR, on conv 1.
    """
    if share == 1:
        return [0] * num_scales
    step = 3 if share == 4 else 2
    ticks = np.linspace(1 / step / share, 1 - 1 / step / share, share)
    where = [k / (num_scales - 1) if num_scales > 1 else 0.0 for k in range(num_scales)]
    return [int(np.argmin(np.abs(ticks - at))) for at in where]


class Phi(nn.Module):
    """``(1 - r) x + r conv3x3(x)`` on (B, D, h, w): VAR's residual refinement of a scale."""

    def __init__(self, dim: int, ratio: float) -> None:
        super().__init__()
        self.ratio = ratio
        self.conv = nn.Conv2d(dim, dim, kernel_size=3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * (1.0 - self.ratio) + self.conv(x) * self.ratio


def area(x: torch.Tensor, size: int) -> torch.Tensor:
    """(B, D, h, w) -> (B, D, size, size) by area averaging; unchanged at size == h == w."""
    if x.shape[-2:] == (size, size):
        return x
    return F.interpolate(x, size=(size, size), mode="area")


def _rows(x: torch.Tensor) -> torch.Tensor:
    """(B, D, p, q) -> (B * p * q, D), row-major over positions: the order of ``indices``."""
    return x.permute(0, 2, 3, 1).reshape(-1, x.shape[1])


def _cumulate(parts: list[torch.Tensor]) -> list[torch.Tensor]:
    """Running sums c_1, c_1 + c_2, ...: one order of additions for forward, lookup and the
    prior inputs, so that they agree bit for bit."""
    sums = [parts[0]]
    for c in parts[1:]:
        sums.append(sums[-1] + c)
    return sums


def bicubic(x: torch.Tensor, size: int) -> torch.Tensor:
    """(B, D, p, p) -> (B, D, size, size) by bicubic upsampling; unchanged at p == size."""
    if x.shape[-2:] == (size, size):
        return x
    return F.interpolate(x, size=(size, size), mode="bicubic")


class MultiScaleQuantizer(nn.Module):
    """Quantize (B, D, h, h) latents (``channel_dim=1``; or (B, h, h, D) with -1) at ``scales``.

    Args:
        dim: D. codebook_size: K, shared by every scale.
        scales: increasing side lengths p_1 < ... < p_S, with p_S = h the latent's side.
        update: ``"ema"`` (codebook buffer moved by the EMA of assignments of all scales) or
            ``"grad"`` (a Parameter trained by the codebook loss).
        beta: commitment weight. decay, eps: EMA decay and Laplace smoothing.
        quant_resi: r of ``phi``; 0 makes every ``phi`` the identity.
        share_resi: number of convs shared over the scales (:func:`phi_choice`); convs no scale
            picks are not built, so DDP sees no parameter without a gradient.
        loss_on: ``"every_scale"`` (VAR: losses averaged over the running f_hat of each scale)
            or ``"final"`` (only the full f_hat).
        search, max_bytes: passed to :func:`vqlab.quantizers.nearest_code`.
    """

    def __init__(
        self,
        dim: int,
        codebook_size: int,
        scales: tuple[int, ...],
        *,
        update: str = "ema",
        beta: float = 0.25,
        decay: float = 0.99,
        eps: float = 1e-5,
        quant_resi: float = 0.5,
        share_resi: int = 4,
        channel_dim: int = 1,
        search: str = "exact",
        loss_on: str = "every_scale",
        max_bytes: int = DEFAULT_MAX_BYTES,
    ) -> None:
        super().__init__()
        sizes = {"dim": dim, "codebook_size": codebook_size, "max_bytes": max_bytes}
        rates = {"beta": beta, "decay": decay, "eps": eps, "dead_code_threshold": 0.0}
        check_quantizer_args(**sizes, **rates, channel_dim=channel_dim)
        choices = {"update": (update, UPDATES), "search": (search, SEARCHES)}
        _check_options(scales, quant_resi, share_resi, channel_dim, choices, loss_on=loss_on)
        self.dim, self.codebook_size, self.update = dim, codebook_size, update
        self.scales: tuple[int, ...] = tuple(int(p) for p in scales)
        self.beta, self.decay, self.eps = beta, decay, eps
        self.quant_resi, self.share_resi, self.loss_on = quant_resi, share_resi, loss_on
        self.channel_dim, self.search, self.max_bytes = channel_dim, search, max_bytes
        choice = phi_choice(len(self.scales), share_resi)
        used = sorted(set(choice))
        self.phi_index = [used.index(c) for c in choice]  # scale -> slot among the built convs
        make = (lambda: Phi(dim, quant_resi)) if quant_resi != 0 else nn.Identity
        self.phis = nn.ModuleList([make() for _ in used])
        register_codebook(self, torch.randn(codebook_size, dim), update)  # (K, D)
        # EMA of assignments per step, pooled (the EMA cluster size) and per scale (usage)
        self.register_buffer("ema_counts", torch.ones(codebook_size))  # (K,)
        self.register_buffer("scale_counts", torch.zeros(len(self.scales), codebook_size))
        self.register_buffer("initialized", torch.tensor(False))

    # ----------------------------------------------------------------- shapes
    @property
    def codebook(self) -> torch.Tensor:
        """(K, D): the one codebook every scale searches and ``lookup`` reads."""
        stored = stored_codebook(self)
        if stored is None:  # before __init__ stores it; hasattr (register_buffer) reads this
            raise AttributeError("codebook")
        return stored

    @property
    def num_tokens(self) -> int:
        """L = sum of p_k^2: the length of ``indices``."""
        return sum(p * p for p in self.scales)

    def _to_channel_first(self, z_e: torch.Tensor) -> torch.Tensor:
        check_quantizer_input(
            z_e, dim=self.dim, channel_dim=self.channel_dim, device=self.ema_counts.device
        )
        z = z_e.movedim(self.channel_dim, 1)  # (B, D, h, w)
        h = self.scales[-1]
        if z.dim() != 4 or z.shape[2:] != (h, h):
            raise ValueError(
                f"expected a (B, D, {h}, {h}) latent (channel_dim={self.channel_dim}) for "
                f"scales {self.scales}; got shape {tuple(z_e.shape)}"
            )
        return z

    def split_indices(self, indices: torch.Tensor) -> list[torch.Tensor]:
        """(B, L) ids in [0, K) -> S tensors (B, p_k, p_k), the inverse of the forward's
        concatenation."""
        check_integer(indices, "indices")
        if indices.dim() != 2 or indices.shape[1] != self.num_tokens:
            raise ValueError(f"expected indices (B, {self.num_tokens}); got {tuple(indices.shape)}")
        check_indices(indices, self.codebook_size)
        parts = torch.split(indices, [p * p for p in self.scales], dim=1)
        return [part.reshape(-1, p, p) for part, p in zip(parts, self.scales, strict=True)]

    # ------------------------------------------------------------ decode path
    def contribution(
        self, level_idx: torch.Tensor, k: int, codebook: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Scale k's (0-based) ids (B, p_k, p_k) -> ``phi_k(bicubic(codes, h))`` (B, D, h, h).

        The one function both ``forward`` and ``lookup`` use, so they agree bit for bit.
        """
        codes = F.embedding(level_idx, self.codebook if codebook is None else codebook)
        up = bicubic(codes.permute(0, 3, 1, 2), self.scales[-1])  # (B, D, h, h)
        return self.phis[self.phi_index[k]](up.contiguous())

    def next_scale_input(self, f_hat_partial: torch.Tensor, k: int) -> torch.Tensor:
        """``area(f_hat after scales 1..k, p_{k+1})``: (B, D, h, h) -> (B, D, p_{k+1}, p_{k+1}).

        k counts the scales already in ``f_hat_partial`` (1 <= k < S); the input of a VAR prior
        at scale k + 1, in training (teacher forcing) and in sampling alike.
        """
        if not 1 <= k < len(self.scales):
            raise ValueError(f"k must lie in [1, {len(self.scales) - 1}]; got {k}")
        return area(f_hat_partial, self.scales[k])

    def teacher_forcing_input(self, indices: torch.Tensor) -> torch.Tensor:
        """(B, L) ids -> (B, L - p_1^2, D): ``next_scale_input`` of scales 2..S, concatenated
        coarse to fine, row-major within a scale (what a VAR prior reads after the class)."""
        levels = self.split_indices(indices)[:-1]
        with torch.autocast(device_type=indices.device.type, enabled=False):
            partials = _cumulate([self.contribution(lv, k) for k, lv in enumerate(levels)])
            inputs = [self.next_scale_input(f, k + 1) for k, f in enumerate(partials)]
        if not inputs:  # a single scale: the prior reads only the class
            return self.codebook.new_zeros(indices.shape[0], 0, self.dim)
        return torch.cat([x.flatten(2).transpose(1, 2) for x in inputs], dim=1)  # (B, L - p_1^2, D)

    def lookup(self, indices: torch.Tensor) -> torch.Tensor:
        """(B, L) ids -> f_hat like ``z_e`` (the decode path): equals ``forward``'s
        ``quantized`` in eval mode bit for bit."""
        levels = self.split_indices(indices)
        with torch.autocast(device_type=indices.device.type, enabled=False):
            f_hat = _cumulate([self.contribution(lv, k) for k, lv in enumerate(levels)])[-1]
        return f_hat.movedim(1, self.channel_dim)

    # ---------------------------------------------------------------- forward
    def _residual_pass(self, z: torch.Tensor, codebook: torch.Tensor) -> tuple[list, list, list]:
        """z (B, D, h, h) fp32 -> (level_indices, contributions, search vectors (B, p_k^2, D)).

        The residual is detached: it only chooses codes, and gradients reach z_e through the
        straight-through copy and the commitment loss.
        """
        rest = z.detach()
        levels, contributions, searched = [], [], []
        for k, p in enumerate(self.scales):
            flat = _rows(area(rest, p))  # (B*p*p, D)
            idx = nearest_code(
                flat, codebook.detach(), max_bytes=self.max_bytes, precision=self.search
            ).indices
            level_idx = idx.reshape(-1, p, p)  # (B, p, p)
            c = self.contribution(level_idx, k, codebook)  # (B, D, h, h)
            rest = rest - c.detach()
            levels.append(level_idx)
            contributions.append(c)
            searched.append(flat.reshape(z.shape[0], p * p, self.dim))
        return levels, contributions, searched

    @torch.no_grad()
    def search_vectors(self, z_e: torch.Tensor) -> list[torch.Tensor]:
        """What each scale searches the codebook with, for latents z_e: one (B, p_k^2, D) fp32
        tensor per scale, coarse first (the area-downsampled latent, then residuals)."""
        return self._residual_pass(self._to_channel_first(z_e).float(), self.codebook)[2]

    def forward(self, z_e: torch.Tensor) -> MultiScaleOutput:
        """z_e (B, D, h, h) (channel_dim=1) -> MultiScaleOutput. Runs in fp32 under autocast."""
        z_in = self._to_channel_first(z_e)
        with torch.autocast(device_type=z_in.device.type, enabled=False):
            z = z_in.float()
            levels, contributions, searched = self._residual_pass(z, self.codebook)
            partials = _cumulate(contributions)  # f_hat after scales 1..k
            loss, losses = self._losses(z, partials)
            if self.training:
                self._update_statistics(searched, levels)
            # value exactly f_hat (z - sg(z) is 0), so quantized == lookup(indices) bit for bit
            out = partials[-1].detach() + (z - z.detach())
        quantized = out.to(z_e.dtype).movedim(1, self.channel_dim)
        indices = torch.cat([lv.flatten(1) for lv in levels], dim=1)  # (B, L)
        parts = [c.movedim(1, self.channel_dim) for c in contributions]
        return MultiScaleOutput(quantized, indices, loss, losses, levels, parts)

    def _losses(
        self, z: torch.Tensor, partials: list[torch.Tensor]
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Commitment (and codebook / phi) terms, averaged over the running reconstructions."""
        used = partials if self.loss_on == "every_scale" else partials[-1:]
        commitment = sum(F.mse_loss(z, f.detach()) for f in used) / len(used)
        losses = {"commitment": commitment}
        loss = self.beta * commitment
        # the same squared error trains the codes (grad) or, with EMA codes, only the convs
        name = "codebook" if self.update == "grad" else "phi" if self.quant_resi != 0 else None
        if name is not None:
            losses[name] = sum(F.mse_loss(f, z.detach()) for f in used) / len(used)
            loss = loss + losses[name]
        return loss, losses

    @torch.no_grad()
    def _update_statistics(self, searched: list[torch.Tensor], levels: list[torch.Tensor]) -> None:
        """Pooled EMA over every scale's (search vector, code) pairs; per-scale hit EMA."""
        per_scale = self.per_scale_counts(levels).to(self.scale_counts.dtype)  # (S, K)
        z = torch.cat([s.reshape(-1, self.dim) for s in searched])  # (sum B p^2, D)
        idx = torch.cat([lv.reshape(-1) for lv in levels])
        counts, sums = batch_statistics(z, idx, self.codebook_size)
        # data parallel hook (no-op in one process): global-batch statistics before the update
        per_scale, counts, sums = all_reduce_sum(per_scale, counts, sums)
        self.scale_counts.mul_(self.decay).add_(per_scale, alpha=1.0 - self.decay)
        ema_step(self, counts, sums)

    def per_scale_counts(self, level_indices: list[torch.Tensor]) -> torch.Tensor:
        """S tensors of ids (B, p_k, p_k) -> (S, K) int64 hits of each code at each scale."""
        return torch.stack(
            [torch.bincount(lv.reshape(-1), minlength=self.codebook_size) for lv in level_indices]
        )

    @torch.no_grad()
    def to_code_space(self, z_e: torch.Tensor) -> torch.Tensor:
        """z_e (B, D, h, h) -> (B * L, D): the vectors the search compared with the codebook
        (each scale's downsampled residual), ordered as ``indices.reshape(-1)``, so row i and
        code ``indices.reshape(-1)[i]`` belong together. Single scale: the flattened z_e."""
        z = self._to_channel_first(z_e)
        with torch.autocast(device_type=z.device.type, enabled=False):
            searched = self._residual_pass(z.float(), self.codebook)[2]
        return torch.cat(searched, dim=1).reshape(-1, self.dim)

    # ------------------------------------------------------------------- init
    @torch.no_grad()
    def init_from_data(
        self, z: torch.Tensor, *, method: str = "kmeans", iters: int = 20, seed: int = 0
    ) -> None:
        """Fit the shared codebook to encoder outputs z (N, D) (flattened, D last), as the
        single-scale layer does. This fits full-resolution vectors, not the smaller residuals
        of the finer scales; :meth:`init_from_latents` draws the sample across scales."""
        if z.dim() != 2:
            raise ValueError(
                f"init_from_data expects flattened z (N, D); got {tuple(z.shape)} (use "
                "init_from_latents for (B, D, h, h) latents)"
            )
        check_quantizer_input(z, dim=self.dim, channel_dim=-1, device=self.ema_counts.device)
        self._fit(z.float(), method, iters, seed)

    @torch.no_grad()
    def init_from_latents(
        self,
        z_e: torch.Tensor,
        *,
        how: str = "coarse_then_all",
        method: str = "kmeans",
        iters: int = 20,
        seed: int = 0,
    ) -> None:
        """Fit the shared codebook to latents z_e (B, D, h, h), with the sample drawn by ``how``:

        - ``"finest"``: the full-resolution vectors (B h^2 of them), as ``init_from_data``;
        - ``"pyramid"``: ``area(z_e, p_k)`` of every scale pooled (B L vectors): the codes see
          the coarse averages the first scales search, not only pixels;
        - ``"coarse_then_all"``: fit to the coarsest scale with at least K vectors, run the
          residual pass with those codes (and the current convs), then refit to the search
          vectors of every scale pooled (B L), the residuals included: what the codebook
          actually meets in training.
        """
        z = self._to_channel_first(z_e).float()
        if how == "finest":
            sample = _rows(z)  # (B*h*h, D)
        elif how == "pyramid":
            sample = torch.cat([_rows(area(z, p)) for p in self.scales])  # (B*L, D)
        elif how == "coarse_then_all":
            enough = [p for p in self.scales if z.shape[0] * p * p >= self.codebook_size]
            self._fit(_rows(area(z, (enough or self.scales[-1:])[0])), method, iters, seed)
            sample = torch.cat(self._residual_pass(z, self.codebook)[2], dim=1)
            sample = sample.reshape(-1, self.dim)  # (B*L, D)
        else:
            raise ValueError(f"unknown init sample how={how!r}; choose one of {list(INIT_WAYS)}")
        self._fit(sample, method, iters, seed)

    def _fit(self, x: torch.Tensor, method: str, iters: int, seed: int) -> None:
        """Codes fitted to x (N, D) by ``method``; EMA statistics reset; ``initialized`` set."""
        k = self.codebook_size
        sizes = {"rows": x.shape[0], "codebook_size": k, "iters": iters, "seed": seed}
        check_init_args(method, methods=INIT_METHODS, **sizes)
        codes = fit_codes(x, k, method, iters=iters, seed=seed)
        if codes is not None:
            self.codebook.data.copy_(codes)
        self.scale_counts.zero_()
        reset_statistics(self)

    def extra_repr(self) -> str:
        return (
            f"dim={self.dim}, codebook_size={self.codebook_size}, scales={self.scales}, "
            f"update={self.update!r}, beta={self.beta}, quant_resi={self.quant_resi}, "
            f"share_resi={self.share_resi}, phi_index={self.phi_index}, loss_on={self.loss_on!r}"
        )


def _check_options(
    scales: tuple[int, ...],
    quant_resi: float,
    share_resi: int,
    channel_dim: int,
    choices: dict[str, tuple[str, tuple[str, ...]]],
    loss_on: str,
) -> None:
    """Refuse option values that have no defined meaning, naming the valid ones."""
    for name, (value, valid) in {**choices, "loss_on": (loss_on, LOSS_ON)}.items():
        if value not in valid:
            raise ValueError(f"{name}={value!r} is not valid; choose one of {list(valid)}")
    ok = len(scales) > 0 and all(isinstance(p, int) and p >= 1 for p in scales)
    if not ok or any(a >= b for a, b in zip(scales, scales[1:])):
        raise ValueError(f"scales must be increasing positive ints; got {scales!r}")
    if channel_dim not in (1, -1):
        raise ValueError(
            f"channel_dim must be 1 (B, D, h, w) or -1 (B, h, w, D); got {channel_dim}"
        )
    if not 0.0 <= quant_resi <= 1.0:
        raise ValueError(f"quant_resi must lie in [0, 1]; got {quant_resi}")
    if not isinstance(share_resi, int) or share_resi < 1:
        raise ValueError(f"share_resi must be an int >= 1; got {share_resi!r}")


def _build(vq, model, input_shape: tuple[int, ...], channel_dim: int) -> MultiScaleQuantizer:
    """``vq.kind=multiscale`` over a conv model's square latent grid, ending at its side."""
    if model.kind != "conv":
        raise ConfigError("vq.kind=multiscale quantizes latent grids: it needs model.kind=conv")
    side = input_shape[1] // model.downsample
    scales = vq.scale_list() or (side,)
    if scales[-1] != side or input_shape[1] != input_shape[2]:
        raise ConfigError(
            f"vq.scales={vq.scales!r} must end at the latent side {side} (square "
            f"{input_shape[1]}x{input_shape[2]} images / model.downsample={model.downsample})"
        )
    return MultiScaleQuantizer(
        model.latent_dim, vq.codebook_size, scales, update=vq.update, beta=vq.beta,
        decay=vq.decay, eps=vq.eps, quant_resi=vq.quant_resi,
        share_resi=min(vq.share_resi, len(scales)), channel_dim=channel_dim, search=vq.search,
        loss_on=vq.loss_on,
    )  # fmt: skip


QUANTIZERS.register(
    "multiscale",
    QuantizerEntry(
        _build, options=("scales", "quant_resi", "share_resi", "ms_init", "loss_on"),
        title="multi-scale layer",
    ),
)  # fmt: skip
